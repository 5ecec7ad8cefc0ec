"""Fuzz the data layer: whatever the file holds, read_table and the column cleaners return or raise DataError.

A DataError from reading must name the file; nothing else may escape (no pandas, csv, json, pyarrow or
UnicodeDecodeError tracebacks for users).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import itertools
import json
import os
import sys

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptlab.data.columns import check_columns, clean_label_column, clean_text_column
from adaptlab.data.readers import read_table
from adaptlab.errors import DataError

EXAMPLES = int(os.environ.get("ADAPTLAB_FUZZ_EXAMPLES", 200))
BIG = 1_000_000
_counter = itertools.count()

# Text that stresses CSV: separators, quotes, newlines, NUL, non-ASCII, "NA"-like values, numbers.
cell = st.one_of(
    st.sampled_from(["", "NA", "nan", "null", "1", "1.0", "0", "-2.00", "a,b", '"', '""', "x\ny", "\r", "\t",
                     "caf\u00e9", "\u2028", "\x00", " ", "label"]),
    st.text(max_size=12),
)
header_cell = st.one_of(st.sampled_from(["text", "label", "text", "", " label ", "_row", "x"]), st.text(max_size=6))


def _quote(value: str, sep: str) -> str:
    if any(ch in value for ch in (sep, '"', "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def delimited(draw) -> tuple[str, str]:
    """(suffix, text) for CSV/TSV with random headers, ragged rows, stray quotes and quoted newlines."""
    sep = draw(st.sampled_from([",", "\t"]))
    header = draw(st.lists(header_cell, min_size=1, max_size=4))
    width = st.integers(0, 5) if draw(st.integers(0, 3)) == 0 else st.just(len(header))  # ragged 1 time in 4
    rows = draw(st.lists(width.flatmap(lambda n: st.lists(cell, min_size=n, max_size=n)), max_size=6))
    quoted = draw(st.integers(0, 4)) > 0  # mostly written by a proper CSV writer, sometimes raw
    lines = [sep.join(_quote(h, sep) if quoted else h for h in header)]
    lines += [sep.join(_quote(c, sep) if quoted else c for c in row) for row in rows]
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return (".csv" if sep == "," else ".tsv"), newline.join(lines) + draw(st.sampled_from(["", newline, "\n\n"]))


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from(["1", "1.0", "", "a", "b"]))
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=3), inner, max_size=3), max_leaves=6)


@st.composite
def jsonl(draw) -> tuple[str, str]:
    """(suffix, text) for JSONL/JSON: objects with mixed-type labels, junk lines, lists, blank lines."""
    line = st.one_of(
        st.fixed_dictionaries({"text": json_value, "label": json_value}).map(json.dumps),
        st.dictionaries(st.sampled_from(["text", "label", "_row", "x"]), json_value, max_size=3).map(json.dumps),
        json_value.map(json.dumps),
        st.sampled_from(["", "{", '{"a": 1, "a": 2}', "[", "NaN", '{"text": "a"} trailing', '{"label": 1e999}',
                         '{"label": ' + "9" * 5000 + "}", "[" * 5000 + "]" * 5000]),
        st.text(max_size=10),
    )
    lines = draw(st.lists(line, max_size=6))
    if draw(st.booleans()):
        return ".jsonl", "\n".join(lines)
    return ".json", "[" + ",".join(lines) + "]"


@st.composite
def file_case(draw) -> tuple[str, bytes, int]:
    """(suffix, file bytes, index of a 1 MB field to add or -1)."""
    kind = draw(st.sampled_from(["delimited", "delimited", "json", "bytes"]))
    if kind == "bytes":
        suffix = draw(st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt"]))
        return suffix, draw(st.binary(max_size=300)), -1
    suffix, text = draw(delimited() if kind == "delimited" else jsonl())
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-bom", "latin-1", "utf-16"]))
    if encoding == "utf-8-bom":
        data = codecs.BOM_UTF8 + text.encode("utf-8", "surrogatepass")
    else:
        data = text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")
    if draw(st.integers(0, 3)) == 0:  # a stray latin-1 byte in a utf-8 file
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xe9", b"\xff", b"\x80", b"\xc3"])) + data[at:]
    big = draw(st.integers(-1, 9))  # sometimes a 1 MB field
    return suffix, data, big if big in (0, 1) else -1


def _add_big_field(suffix: str, data: bytes, where: int) -> bytes:
    """Insert a 1 MB run of 'x' into the first (where=0) or last (where=1) line."""
    filler = b"x" * BIG
    if where == 0 or b"\n" not in data:
        return filler + data if suffix in (".csv", ".tsv") else data.replace(b'"', b'"' + filler, 1)
    cut = data.rfind(b"\n", 0, max(1, len(data) - 1)) + 1
    return data[:cut] + filler + data[cut:]


def _check(tmp_path, suffix: str, data: bytes, big: int, compress: str | None) -> None:
    if big >= 0:
        data = _add_big_field(suffix, data, big)
    if compress and suffix in (".csv", ".tsv", ".jsonl"):
        data = gzip.compress(data) if compress == ".gz" else bz2.compress(data)
        suffix += compress
    path = tmp_path / f"fuzz{next(_counter)}{suffix}"
    path.write_bytes(data)
    try:
        df = read_table(path)
    except DataError as err:
        assert path.name in str(err), str(err)
        return
    assert isinstance(df, pd.DataFrame) and len(df) > 0
    assert df["_row"].tolist() == list(range(1, len(df) + 1))
    columns = [c for c in df.columns if c != "_row"]
    assert columns and len(set(columns)) == len(columns)
    roles = {"text": columns[0], "label": columns[-1]}
    try:
        check_columns(df, roles, path.name)
        clean_text_column(df, roles["text"], path.name)
        labels = clean_label_column(df, roles["label"], path.name)
    except DataError as err:
        assert path.name in str(err), str(err)
        return
    assert all(isinstance(v, str) and v == v.strip() and v for v in labels)


compression = st.sampled_from([None, None, None, ".gz", ".bz2"])
_settings = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}


@settings(max_examples=EXAMPLES, **_settings)
@given(case=file_case(), compress=compression)
def test_read_and_clean_never_raise_anything_but_data_error(tmp_path, case, compress):
    _check(tmp_path, *case, compress)


@pytest.mark.slow
@settings(max_examples=2000, **_settings)
@given(case=file_case(), compress=compression)
def test_read_and_clean_never_raise_anything_but_data_error_long(tmp_path, case, compress):
    _check(tmp_path, *case, compress)


def test_harness_reports_foreign_exceptions_and_unnamed_files(tmp_path, monkeypatch):
    """The property is not vacuous: other exceptions escape and a message without the file name fails."""
    me = sys.modules[__name__]
    monkeypatch.setattr(me, "read_table", lambda path: pd.read_csv(path))
    with pytest.raises(UnicodeDecodeError):
        _check(tmp_path, ".csv", b"a\n\xff\n", -1, None)

    def unnamed(path):
        raise DataError("something is wrong")

    monkeypatch.setattr(me, "read_table", unnamed)
    with pytest.raises(AssertionError):
        _check(tmp_path, ".csv", b"a\n1\n", -1, None)


def test_known_cases_through_the_harness(tmp_path):
    """A clean file passes through; a big field, BOM and compression still read."""
    _check(tmp_path, ".csv", codecs.BOM_UTF8 + b"text,label\nx,1\ny,1.0\nz,2\n", 1, ".gz")
    df = read_table(sorted(tmp_path.glob("fuzz*.csv.gz"))[-1])
    assert df["text"].str.len().max() == BIG + 1 and df["label"].tolist() == ["1", "1.0", "2"]
