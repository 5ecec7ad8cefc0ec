"""The documents to find topics in: a column of a data file, or the data of a ladder config.

A config (``.yaml``/``.yml``) gives its data source, read and split exactly as ``adaptlab compare`` does (seeded,
subsampled by ``max_train_examples``/``max_test_examples``); ``split="all"`` (the default) takes the union of the
train, validation and test splits, so the corpus is the data the ladder sees. Pick ``test`` to look at texts a
trained embedding rung never saw. Any other path is a data file read by :func:`adaptlab.data.readers.read_table`.

Every document keeps its 1-based row in the source (``_row``), so a topic's documents point back at the data.
Missing text (an empty cell, null, NaN) is an error that lists the rows, unless it is dropped on request: a missing
value is never embedded as the string "nan".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from adaptlab.errors import DataError, UserError, did_you_mean

CONFIG_SUFFIXES = (".yaml", ".yml")
SPLITS = ("all", "train", "validation", "test")
ROW = "_row"
SPLIT = "_split"
SHOWN_ROWS = 10


@dataclass
class Corpus:
    """The documents, in order, with where each came from."""

    texts: list[str]
    rows: list[int]
    """1-based row of each document in its source file (or builtin dataset)."""
    splits: list[str] | None
    """Each document's split when the corpus comes from a ladder config."""
    source: str
    name: str
    """A short name for the default output folder: the ladder's name or the file's stem."""
    text_column: str
    split: str | None = None
    """Which splits of a ladder config ("all", "train", ...); None for a data file."""
    model: str | None = None
    """The config's base model, when read from a config."""
    seed: int = 0
    max_length: int = 128

    def __len__(self) -> int:
        return len(self.texts)


def load_corpus(path: Path, text_column: str | None, *, split: str = "all", max_docs: int | None = None,
                seed: int | None = None, drop_missing: bool = False) -> Corpus:
    """Read, check and (with ``max_docs``) subsample the corpus."""
    if split not in SPLITS:
        raise UserError(f"--split '{split}': choose one of {', '.join(SPLITS)}.{did_you_mean(split, SPLITS)}")
    if Path(path).suffix.lower() in CONFIG_SUFFIXES:
        frame, meta = _from_config(Path(path), split)
    else:
        if split != "all":
            raise UserError(f"--split {split} needs a ladder config; {path} is a data file, read whole.")
        frame, meta = _from_file(Path(path))
    default_column = meta.pop("text_column", None)
    column = text_column or default_column or "text"
    values = _text_column(frame, column, meta["source"], drop_missing)
    kept = frame.loc[values.index]
    corpus = Corpus(texts=[_as_text(v) for v in values], rows=[int(r) for r in kept[ROW]],
                    splits=list(kept[SPLIT]) if SPLIT in kept else None, text_column=column, **meta)
    if seed is not None:
        corpus.seed = seed
    return _sample(corpus, max_docs)


def _from_config(path: Path, split: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    from adaptlab.config import load_ladder
    from adaptlab.data.source import load_frames

    spec = load_ladder(path)
    frames = load_frames(spec)
    names = ["train", "validation", "test"] if split == "all" else [split]
    parts = [frames[n].assign(**{SPLIT: n}) for n in names if n in frames and len(frames[n])]
    if not parts:
        raise DataError(f"{path}: the {split} split of this ladder has no rows.")
    frame = pd.concat(parts, ignore_index=True)
    source = frames["train"].attrs.get("source") or str(path)
    name = spec.name if split == "all" else f"{spec.name}-{split}"
    return frame, {"source": str(source), "name": name, "split": split, "text_column": spec.data.text_column,
                   "model": spec.model, "seed": spec.seed, "max_length": spec.data.max_length}


def _from_file(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    from adaptlab.data.readers import read_table

    frame = read_table(path)
    stem = path.name.split(".")[0] or "corpus"
    return frame, {"source": str(path), "name": stem}


def _text_column(frame: pd.DataFrame, column: str, source: str, drop_missing: bool) -> pd.Series:
    """The text column, checked: it exists, and no value is missing (or the missing ones are dropped)."""
    columns = [c for c in frame.columns if c not in (ROW, SPLIT)]
    if column not in columns:
        listed = ", ".join(repr(c) for c in columns)
        raise DataError(f"{source}: no text column '{column}'.{did_you_mean(column, columns)} The columns are: "
                        f"{listed}. Pass the one holding the text with --text COLUMN.")
    values = frame[column]
    missing = values.map(_missing)
    if missing.any() and not drop_missing:
        raise DataError(_missing_message(frame[missing], column, source))
    return values[~missing]


def _missing_message(rows: pd.DataFrame, column: str, source: str) -> str:
    where = [f"{r} ({s})" for r, s in zip(rows[ROW], rows[SPLIT])] if SPLIT in rows else [str(r) for r in rows[ROW]]
    more = f" and {len(where) - SHOWN_ROWS} more" if len(where) > SHOWN_ROWS else ""
    return (f"{source}: {len(where)} row(s) have no text in column '{column}' (empty, null or NaN): row(s) "
            f"{', '.join(where[:SHOWN_ROWS])}{more}. Fill them in, or pass --drop-missing to leave them out.")


def _missing(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple)):
        return not any(str(v).strip() for v in value)
    if hasattr(value, "__len__") and hasattr(value, "tolist"):  # a numpy array of tokens (Parquet, datasets)
        return _missing(value.tolist())
    try:
        return value is None or bool(pd.isna(value)) or (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def _as_text(value: Any) -> str:
    """A cell as the text to embed: strings as they are, token lists joined with spaces, numbers as written."""
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def _sample(corpus: Corpus, max_docs: int | None) -> Corpus:
    """At most ``max_docs`` documents, a seeded random sample kept in corpus order."""
    if max_docs is None or len(corpus) <= max_docs:
        return corpus
    if max_docs < 1:
        raise UserError(f"--max-docs {max_docs}: give a positive number of documents.")
    import numpy as np

    keep = np.sort(np.random.default_rng(corpus.seed).choice(len(corpus), size=max_docs, replace=False))
    corpus.texts = [corpus.texts[i] for i in keep]
    corpus.rows = [corpus.rows[i] for i in keep]
    corpus.splits = [corpus.splits[i] for i in keep] if corpus.splits is not None else None
    return corpus


def check_size(corpus: Corpus, minimum: int, min_topic_size: int) -> None:
    """A UserError when there are too few documents to find two topics of the smallest size."""
    if len(corpus) < minimum:
        raise DataError(
            f"{corpus.source}: {len(corpus)} document(s) are too few to find topics; clustering needs at least "
            f"{minimum} (two topics of --min-topic-size {min_topic_size}). Add documents or lower --min-topic-size "
            "(at least 2)."
        )
