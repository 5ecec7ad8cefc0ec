"""From a data spec to train/validation/test frames: read, check columns, split (seeded, stratified), subsample."""

from __future__ import annotations

import pandas as pd

from adaptlab.config import LadderSpec
from adaptlab.data.columns import clean_label_column, normalise_label
from adaptlab.data.split import split_frame
from adaptlab.errors import DataError


def _read(spec: LadderSpec, path: str) -> pd.DataFrame:
    from adaptlab.data.readers import read_table

    resolved = spec.resolve_path(path)  # relative to the config's folder; as a path, it works from here
    frame = read_table(resolved, fmt=spec.data.format, encoding=spec.data.encoding)
    frame.attrs["source"] = str(resolved)  # messages name the file as the user can open it from here
    return frame


def _single_source(spec: LadderSpec) -> pd.DataFrame:
    data = spec.data
    if data.builtin:
        from adaptlab.data.builtins import load_builtin

        frame = load_builtin(data.builtin)
        frame.attrs["source"] = f"builtin:{data.builtin}"
        return frame
    if data.hub:
        from adaptlab.data.readers import load_hub_dataset

        frame = load_hub_dataset(data.hub, split="train", config=data.hub_config)
        frame.attrs["source"] = f"hub:{data.hub}"
        return frame
    assert data.path
    return _read(spec, data.path)


def _subsample(frame: pd.DataFrame, n: int | None, seed: int, stratify: str | None,
               setting: str | None = None) -> pd.DataFrame:
    """``n`` rows of ``frame`` (stratified when it can be). With ``setting`` (the training split's limit), fewer rows
    than classes is a DataError naming that setting, not the data."""
    if n is None or len(frame) <= n:
        return frame
    labels = frame[stratify].map(normalise_label) if stratify else None  # 1, 1.0 and "1" are one class
    classes = labels.nunique() if labels is not None else 0
    if setting and n < classes:
        raise DataError(f"data.{setting} is {n}, fewer than the {classes} classes of the training split, so some "
                        f"class would have no example to learn from; set it to at least {classes}.")
    from sklearn.model_selection import train_test_split

    strat = labels if labels is not None and labels.value_counts().min() >= 2 else None
    try:
        keep, _ = train_test_split(frame, train_size=n, random_state=seed, stratify=strat)
    except ValueError:
        keep, _ = train_test_split(frame, train_size=n, random_state=seed)
    keep = keep.sort_index()
    keep.attrs = frame.attrs
    return keep


def _stratify_if_present(frame: pd.DataFrame, column: str | None) -> str | None:
    """The column to stratify the split by, when ``frame`` has it; a label that is missing or not a single value
    anywhere in the file is a DataError naming every such row at once (after the split, each split would name only
    its own)."""
    if column and column in frame.columns:
        clean_label_column(frame, column, frame.attrs.get("source", "data"), min_classes=1)
        return column
    return None


def _carve(spec: LadderSpec, frames: dict[str, pd.DataFrame], stratify: str | None) -> dict[str, pd.DataFrame]:
    """With explicit files: the test and validation splits that have no file of their own are carved from the
    training file (stratified, seeded), test_size and validation_size being fractions of it. validation_size: 0
    means no validation split."""
    data, train = spec.data, frames["train"]
    test = 0.0 if "test" in frames else data.test_size
    validation = 0.0 if "validation" in frames else data.validation_size
    if not test and not validation:
        return {"validation": frames.get("validation", train.iloc[0:0])}
    source = train.attrs.get("source")
    parts = split_frame(train, validation=validation, test=test, seed=spec.seed,
                        stratify=_stratify_if_present(train, stratify), group=data.group_column)
    carved = {"train": parts["train"]}
    if test:
        carved["test"] = parts["test"]
    if "validation" not in frames:
        carved["validation"] = parts["validation"]
    for f in carved.values():  # cut from the training file; a split with a file of its own keeps its name
        f.attrs["source"] = source
    return carved if "validation" not in frames else {**carved, "validation": frames["validation"]}


def check_data_files(spec: LadderSpec) -> None:
    """Every data file the config names exists (what ``adaptlab validate`` checks, without reading them)."""
    from adaptlab.data.readers import missing_file_message

    for name in ("path", "train", "validation", "test"):
        value = getattr(spec.data, name)
        path = spec.resolve_path(value) if value else None
        if path is not None and not path.exists():  # a file, or a datasets save_to_disk folder
            raise DataError(f"data.{name}: {missing_file_message(path)}")


def load_frames(spec: LadderSpec, stratify_role: str | None = "label_column") -> dict[str, pd.DataFrame]:
    """The three splits every rung of the ladder shares."""
    data = spec.data
    stratify = getattr(data, stratify_role) if stratify_role else None
    if data.train:
        frames = {"train": _read(spec, data.train)}
        for name in ("validation", "test"):
            path = getattr(data, name)
            if path:
                frames[name] = _read(spec, path)
        frames.update(_carve(spec, frames, stratify))
    else:
        frame = _single_source(spec)
        source = frame.attrs.get("source")
        if len(frame) == 0:
            raise DataError(f"{source}: the dataset has no rows.")
        frames = split_frame(frame, validation=data.validation_size, test=data.test_size, seed=spec.seed,
                             stratify=_stratify_if_present(frame, stratify), group=data.group_column)
        for f in frames.values():
            f.attrs["source"] = source
    strat = _stratify_if_present(frames["train"], stratify)
    frames["train"] = _subsample(frames["train"], data.max_train_examples, spec.seed, strat, "max_train_examples")
    frames["test"] = _subsample(frames["test"], data.max_test_examples, spec.seed, strat)
    return frames
