"""Check that the configured columns exist and clean text and label columns, naming the rows that are wrong.

Row numbers in messages are 1-based data rows (the ``_row`` column that :func:`adaptlab.data.readers.read_table`
adds, so they still point at the source after a split). Where the reader knows each record is on one line
(``frame.attrs["line_offset"]``), the line number in the file is given too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd

from adaptlab.data.readers import short
from adaptlab.errors import DataError, did_you_mean

ROW_COLUMN = "_row"
MAX_LISTED_ROWS = 10
_INTEGRAL_TEXT = re.compile(r"[+-]?\d+\.0*")
_BOOLEAN_TEXT = ("true", "false")


def check_columns(df: pd.DataFrame, required: dict[str, str], source: str) -> None:
    """Raise a DataError for an empty frame or for any role (``{"text": "review"}``) whose column is missing."""
    if len(df) == 0:
        raise DataError(f"{source}: the dataset has no rows.")
    columns = [str(c) for c in df.columns if c != ROW_COLUMN]
    problems = []
    for role, column in required.items():
        if column is None or column in df.columns:
            continue
        problems.append(
            f"column '{short(column)}' (data.{role}_column) not found.{did_you_mean(column, columns)}"
        )
    if problems:
        listing = ", ".join(short(c) for c in columns)
        raise DataError(f"{source}: {' '.join(problems)} Columns: {listing}.")


def clean_text_column(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    """The column as strings; empty, whitespace-only or missing cells raise a DataError listing the rows."""
    check_scalar(df, col, source, "text")
    values = [_text_value(v) for v in df[col].tolist()]
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise DataError(
            f"{source}: column '{col}' is empty in {_rows_text(df, missing)}. Drop these rows or fill in the text."
        )
    return pd.Series(values, index=df.index, name=col, dtype=object)


_SPLIT_NAMES = {"train": "training"}


def clean_label_column(
    df: pd.DataFrame, col: str, source: str, *, min_classes: int = 2, split: str | None = None
) -> pd.Series:
    """Labels as strings ("1", 1 and 1.0 are one class); missing labels and too few classes raise a DataError.

    ``min_classes`` is 2 for training data; pass 1 for an evaluation split that may hold a single class. ``split``
    (train, validation, test) says that ``df`` is that split of ``source``, not the whole file.
    """
    check_scalar(df, col, source, "a label")
    values = [normalise_label(v) for v in df[col].tolist()]
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise DataError(
            f"{source}: column '{col}' has no label in {_rows_text(df, missing)}. Drop these rows or fill in a label."
        )
    classes = sorted(set(values))
    if len(classes) < min_classes:
        if len(classes) == 1:
            where = (f"in the {_SPLIT_NAMES.get(split, split)} split ({len(values)} rows)" if split
                     else f"in all {len(values)} rows")
            found = f"only one class, '{short(classes[0])}', {where}"
        else:
            found = f"{len(classes)} classes ({', '.join(classes)})"
        raise DataError(
            f"{source}: column '{col}' has {found}; classification needs at least {min_classes} classes. "
            "Check data.label_column or add examples of the other classes."
        )
    return pd.Series(values, index=df.index, name=col, dtype=object)


#: What a JSON or Parquet value that is not a single value is called in messages.
_KINDS = {"list": "a list", "tuple": "a list", "ndarray": "a list", "dict": "an object", "set": "a set",
          "bytes": "bytes", "bytearray": "bytes"}


def check_scalar(df: pd.DataFrame, col: str, source: str, what: str) -> None:
    """DataError listing the rows where ``col`` holds a list, dict or bytes (JSON, Parquet) where ``what`` should be:
    its printed form (``"['pos']"``, ``"b'...'"``) would pass for text or a class."""
    cells = df[col].tolist()
    odd = [i for i, v in enumerate(cells) if isinstance(v, (list, tuple, dict, set, np.ndarray, bytes, bytearray))]
    if odd:
        kinds = " or ".join(sorted({_KINDS.get(type(cells[i]).__name__, type(cells[i]).__name__) for i in odd}))
        raise DataError(f"{source}: column '{col}' holds {kinds}, not {what}, in {_rows_text(df, odd)}. Give each "
                        f"row {what} as a plain string (or point data.*_column at the column that holds it).")


def normalise_label(value: Any) -> str | None:
    """A label as a string, or None when missing. Integral floats lose '.0': 1, "1", 1.0, "1.0" -> "1"; a boolean
    reads as "true"/"false" whichever way the file writes it (JSON/Parquet true, CSV "True" or "FALSE")."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() else str(number)
    if isinstance(value, Decimal):
        return _integral_text(str(value)) if value.is_finite() else str(value)
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    if not text:
        return None
    if text.lower() in _BOOLEAN_TEXT:
        return text.lower()
    return _integral_text(text)


def _integral_text(text: str) -> str:
    """'3.0' -> '3', '-2.00' -> '-2'; anything else unchanged."""
    if _INTEGRAL_TEXT.fullmatch(text):
        try:
            return str(int(Decimal(text)))
        except (InvalidOperation, ValueError):
            return text
    return text


def _text_value(value: Any) -> str | None:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (float, np.floating)) and math.isnan(float(value)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def row_numbers(df: pd.DataFrame, positions: list[int]) -> list[int]:
    """1-based source row numbers for positions in ``df`` (from ``_row`` when present)."""
    if ROW_COLUMN in df.columns:
        rows = df[ROW_COLUMN].tolist()
        return [int(rows[p]) for p in positions]
    return [p + 1 for p in positions]


def _rows_text(df: pd.DataFrame, positions: list[int]) -> str:
    """'3 rows: 2 (line 3), 5 (line 6), 9 (line 10)' with at most MAX_LISTED_ROWS listed."""
    rows = sorted(row_numbers(df, positions))  # file order, whatever order the split put them in
    offset = _line_offset(df.attrs.get("line_offset"))
    shown = [f"{r} (line {r + offset})" if offset is not None else str(r) for r in rows[:MAX_LISTED_ROWS]]
    more = f" and {len(rows) - MAX_LISTED_ROWS} more" if len(rows) > MAX_LISTED_ROWS else ""
    noun = "row" if len(rows) == 1 else "rows"
    return f"{len(rows)} {noun}: {noun} {', '.join(shown)}{more}"


def _line_offset(value: Hashable | None) -> int | None:
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None
