"""CoNLL-style token files: one token per line with its tag, a blank line between sentences.

    Empire    B-facility
    State     I-facility
    is        O

Fields are separated by a tab (then a token may hold spaces) or, in a line without tabs, by runs of spaces. The
token is the first field and the tag the last; columns in between (part of speech, chunk) are allowed and ignored,
but every line of a file must have the same number of fields. ``-DOCSTART-`` lines end a sentence and are skipped,
and so are comment lines before a sentence (CoNLL-U's ``# sent_id = 1``, ``# text = ...``): a ``#`` then a space,
with no tab in a file of tab-separated fields; in a file without tabs, only such a line that holds `` = `` or has
another number of fields than the file's lines (``# O`` is the token ``#``).
A sentence becomes one row: ``tokens`` and ``tags`` (lists) and ``_line``, the line its first token is on.
"""

from __future__ import annotations

import re

import pandas as pd

from adaptlab.errors import DataError

LINE_COLUMN = "_line"
_FIX = ("a CoNLL file has one token per line, the token first and its tag last, separated by a tab (or spaces), "
        "and a blank line between sentences")


def read_conll(text: str, name: str) -> pd.DataFrame:
    """The sentences of a CoNLL text as a frame (tokens, tags, _line); a malformed line is a DataError naming it."""
    rows: dict[str, list] = {"tokens": [], "tags": [], LINE_COLUMN: []}
    tokens: list[str] = []
    tags: list[str] = []
    width: tuple[int, int] | None = None  # (fields per line, line that set it)
    start = 0
    tabbed = "\t" in text

    def end_sentence() -> None:
        if tokens:
            rows["tokens"].append(list(tokens))
            rows["tags"].append(list(tags))
            rows[LINE_COLUMN].append(start)
            tokens.clear()
            tags.clear()

    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            end_sentence()
            continue
        if not tokens and _is_comment(line, tabbed, width):
            continue
        fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields] if "\t" in line else fields
        if width is None:
            width = (len(fields), number)
        if len(fields) < 2 or len(fields) != width[0] or not fields[0] or not fields[-1]:
            raise DataError(_field_message(name, number, line, fields, width))
        if not tokens:
            start = number
        tokens.append(fields[0])
        tags.append(fields[-1])
    end_sentence()
    if not rows["tokens"]:
        raise DataError(f"{name}: no sentences found; {_FIX}.")
    return pd.DataFrame(rows)


def _is_comment(line: str, tabbed: bool, width: tuple[int, int] | None) -> bool:
    """A comment line (see the module's docstring)."""
    if not line.startswith("# ") or "\t" in line:
        return False
    return tabbed or " = " in line or (width is not None and len(line.split()) != width[0])


def _field_message(name: str, number: int, line: str, fields: list[str], width: tuple[int, int]) -> str:
    shown = line if len(line) <= 60 else line[:60] + "..."
    if len(fields) < 2:
        what = "has one field (a token with no tag)"
    elif not fields[0] or not fields[-1]:
        what = "has an empty token or tag"
    else:
        what = f"has {len(fields)} fields but line {width[1]} has {width[0]}"
    return f"{name}: line {number} ({shown!r}) {what}; {_FIX}. Fix or remove that line."
