"""Seeded train/validation/test split, stratified by label where every class has enough rows."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from adaptlab.data.columns import ROW_COLUMN, normalise_label, row_numbers
from adaptlab.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

_MISSING = "<missing>"
#: What scikit-learn says when a class is too small to stratify; any other ValueError is not a stratification
#: failure (e.g. an invalid seed) and propagates.
_STRATIFY_FAILURES = ("least populated class", "number of classes")


def split_frame(
    df: pd.DataFrame, *, validation: float, test: float, seed: int, stratify: str | None, group: str | None = None
) -> dict[str, pd.DataFrame]:
    """Split into ``train``/``validation``/``test`` frames (``validation`` or ``test`` may be 0 -> empty frame).

    Sizes follow scikit-learn: ``ceil(fraction * rows)`` rows each, the rest is train. With ``stratify`` (a
    column name) the class mix is kept; when a class is too small for that, the split is unstratified (with a
    warning) and a DataError is raised if some class ends up with no training rows. With ``group`` (a column name,
    data.group_column) whole groups go to one split (seeded; each held-out split gets at least its share of rows),
    so no group is on two sides and no row is lost; the split is then not stratified (a warning says so), and every
    class must still have training rows. A row without a group is a DataError. Every frame keeps ``_row``.
    """
    source = df.attrs.get("source", "data")
    _check_fractions(validation, test, source)
    frame = df if ROW_COLUMN in df.columns else df.assign(**{ROW_COLUMN: range(1, len(df) + 1)})
    n_test, n_val = _count(test, len(frame)), _count(validation, len(frame))
    if len(frame) - n_test - n_val < 1:
        raise DataError(
            f"{source}: {len(frame)} rows are too few to split off {n_val} validation and {n_test} test rows and "
            "keep any for training; add rows or lower data.validation_size / data.test_size."
        )
    labels = _strata(frame, stratify) if stratify else None
    parts = None
    if group:
        if labels is not None:
            log.warning("%s: whole groups of '%s' are held out, so the split is not stratified by '%s'.", source,
                        group, stratify)
        parts = _group_split(df, frame, group, n_val, n_test, seed)
    elif labels is not None:
        try:
            parts = _three_way(frame, n_val, n_test, seed, labels)
        except ValueError as err:
            if not any(marker in str(err) for marker in _STRATIFY_FAILURES):
                raise
            log.warning("%s: cannot stratify by '%s' (%s); splitting without stratification.", source, stratify, err)
    if parts is None:
        parts = _three_way(frame, n_val, n_test, seed, None)
    if labels is not None:
        _check_train_has_every_class(frame, parts["train"], labels, stratify, source)
    frames = {name: frame.iloc[pos] for name, pos in parts.items()}
    for part in frames.values():
        part.attrs = dict(df.attrs)
    return frames


def _group_split(df: pd.DataFrame, frame: pd.DataFrame, group: str, n_val: int, n_test: int,
                 seed: int) -> dict[str, np.ndarray]:
    """Whole groups, in a seeded random order, fill the test split, then validation (at least one group each when
    asked for), then training."""
    source = df.attrs.get("source", "data")
    keys = group_keys(frame, group, source)
    order = np.random.default_rng(seed).permutation(np.unique(keys))
    sizes = pd.Series(keys).value_counts()
    cumulative = np.cumsum(sizes.loc[order].to_numpy())
    n_test_groups = int(np.searchsorted(cumulative, n_test)) + 1 if n_test else 0
    reached = int(np.searchsorted(cumulative, n_test + n_val)) + 1 if n_val else n_test_groups
    n_val_groups = max(reached - n_test_groups, 1) if n_val else 0
    if n_test_groups + n_val_groups >= len(order):
        raise DataError(f"{source}: {len(order)} groups of '{group}' (data.group_column) are too few to hold out "
                        f"{n_test} test and {n_val} validation rows as whole groups and keep any for training; add "
                        "data or lower data.test_size / data.validation_size.")
    split_of = {g: "test" for g in order[:n_test_groups]}
    split_of.update({g: "validation" for g in order[n_test_groups:n_test_groups + n_val_groups]})
    assigned = np.array([split_of.get(k, "train") for k in keys])
    return {name: np.flatnonzero(assigned == name) for name in ("train", "validation", "test")}


def group_keys(frame: pd.DataFrame, group: str, source: str) -> np.ndarray:
    """The ``group`` (data.group_column) value of every row as text; DataError when the column is absent or a row
    has none (its rows are listed: a missing group can't be kept on one side of the split)."""
    if group not in frame.columns:
        columns = [str(c) for c in frame.columns if c != ROW_COLUMN]
        raise DataError(f"{source}: column '{group}' (data.group_column) not found.{did_you_mean(group, columns)} "
                        f"Columns: {', '.join(columns)}.")
    values = frame[group]
    missing = np.flatnonzero(values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy())
    if len(missing):
        rows = row_numbers(frame, list(missing))
        raise DataError(f"{source}: {len(missing)} rows have no '{group}' (data.group_column) value (rows "
                        f"{', '.join(map(str, rows[:10]))}{', ...' if len(rows) > 10 else ''}); give each row its "
                        "group, or drop those rows.")
    return values.astype(str).to_numpy()


def _check_fractions(validation: float, test: float, source: str) -> None:
    for name, value in (("data.validation_size", validation), ("data.test_size", test)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value < 1):
            raise DataError(f"{source}: {name} must be a fraction in [0, 1), got {value!r}.")
    if validation + test >= 1:
        raise DataError(
            f"{source}: data.validation_size ({validation}) + data.test_size ({test}) must be below 1 to leave rows "
            "for training."
        )


def _count(fraction: float, rows: int) -> int:
    return math.ceil(fraction * rows) if fraction > 0 else 0


def _strata(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        raise DataError(f"{frame.attrs.get('source', 'data')}: cannot stratify by '{column}': no such column.")
    return np.array([normalise_label(v) or _MISSING for v in frame[column].tolist()], dtype=object)


def _three_way(
    frame: pd.DataFrame, n_val: int, n_test: int, seed: int, labels: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Positions are split (so a repeated index is harmless); test first, then validation from the rest."""
    rest, test = _take(np.arange(len(frame)), n_test, seed, labels)
    train, val = _take(rest, n_val, seed, labels)
    return {"train": train, "validation": val, "test": test}


def _take(positions: np.ndarray, n: int, seed: int, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(rest, n positions taken out), seeded; stratified when labels are given."""
    if n == 0:
        return positions, positions[:0]
    strata = labels[positions] if labels is not None else None
    rest, taken = train_test_split(positions, test_size=n, random_state=seed, shuffle=True, stratify=strata)
    return rest, taken


def _check_train_has_every_class(
    frame: pd.DataFrame, train: np.ndarray, labels: np.ndarray, column: str, source: str
) -> None:
    absent = sorted(set(labels) - set(labels[train]) - {_MISSING})
    if not absent:
        return
    details = []
    for cls in absent[:10]:
        positions = [i for i, value in enumerate(labels) if value == cls]
        rows = row_numbers(frame, positions)
        details.append(f"'{cls}' (rows {', '.join(map(str, rows[:10]))})")
    raise DataError(
        f"{source}: class(es) {', '.join(details)} of column '{column}' have too few rows: none landed in the "
        "training split. Add examples of them, remove them, or lower data.test_size / data.validation_size."
    )


def drop_shared_groups(frames: dict[str, pd.DataFrame], column: str | None) -> tuple[dict[str, pd.DataFrame], int]:
    """``frames`` without the training and validation rows that share a ``column`` value (data.group_column, e.g. a
    conversation id) with any test row, so no group is on both sides of the split; and how many rows were dropped.
    No column: the frames unchanged."""
    if not column:
        return frames, 0
    test = frames["test"]
    held_out = set(group_keys(test, column, test.attrs.get("source", "test")))
    out, dropped = dict(frames), 0
    for name in ("train", "validation"):
        frame = frames.get(name)
        if frame is None or len(frame) == 0:
            continue
        keep = ~pd.Series(group_keys(frame, column, frame.attrs.get("source", name)), index=frame.index).isin(held_out)
        dropped += int((~keep).sum())
        out[name] = frame[keep]
        out[name].attrs = frame.attrs
    return out, dropped
