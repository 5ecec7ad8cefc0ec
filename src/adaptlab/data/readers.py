"""Read a user's data file into a DataFrame, or fail with a :class:`DataError` that names the file and the line.

Supported: CSV, TSV, JSON Lines, JSON (a list of objects), Parquet, and a folder written by
``datasets.Dataset.save_to_disk`` (``folder#split`` picks one split of a ``DatasetDict``). CSV, TSV and JSONL may be
compressed with gzip (``.gz``), bzip2 (``.bz2``) or xz (``.xz``).

CSV and TSV cells are read as text: ``NA`` stays the string ``"NA"``, an empty cell becomes ``""`` (the column
cleaners treat it as missing). JSON, JSONL, Parquet and ``datasets`` folders keep their own value types.

Every frame gets a ``_row`` column: the 1-based number of the data row in the source, so errors and predictions
can point back at it. For CSV/TSV/JSONL files where each record is on one line, ``frame.attrs["line_offset"]``
says how to turn a row number into a line number (``line = row + line_offset``).
"""

from __future__ import annotations

import bz2
import codecs
import csv
import difflib
import gzip
import io
import json
import lzma
import re
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from adaptlab.errors import DataError
from adaptlab.textcodec import bom_codec

ROW_COLUMN = "_row"

#: Format name -> what it is, for error messages.
SUPPORTED_FORMATS = {
    "csv": ".csv (comma-separated, header line first)",
    "tsv": ".tsv (tab-separated, header line first)",
    "jsonl": ".jsonl / .ndjson (one JSON object per line)",
    "json": ".json (a list of JSON objects)",
    "parquet": ".parquet",
    "conll": ".conll / .bio / .iob (token and tag per line, blank line between sentences)",
    "datasets": "a folder written by datasets' save_to_disk (use folder#split for a DatasetDict)",
}
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
                   ".parquet": "parquet", ".pq": "parquet", ".conll": "conll", ".bio": "conll", ".iob": "conll",
                   ".iob2": "conll", ".bioes": "conll"}
_COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}
_DECOMPRESS = {"gzip": gzip.decompress, "bzip2": bz2.decompress, "xz": lzma.decompress}
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_ENCODING_HINT = "set `encoding: latin-1` (or the file's real encoding) under `data:` in the config"


def supported_formats_text() -> str:
    """One line per supported format, for error messages."""
    return "; ".join(f"{name}: {what}" for name, what in SUPPORTED_FORMATS.items())


# --------------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------------


def read_table(path: str | Path, fmt: str | None = None, encoding: str | None = None) -> pd.DataFrame:
    """Read a data file (or ``save_to_disk`` folder, optionally ``folder#split``) into a DataFrame with ``_row``."""
    path, split = _split_selector(path)
    name = str(path)
    if not _exists(path):
        raise DataError(missing_file_message(path))
    if path.is_dir():
        frame = _read_saved_dataset(path, split, name)
    else:
        if split is not None:
            raise DataError(f"{name}#{split}: '#split' only works with a folder written by save_to_disk.")
        fmt, compression = _detect_format(path, fmt)
        if fmt == "datasets":
            raise DataError(f"{name}: format 'datasets' needs a folder written by save_to_disk, not a file.")
        frame = _read_file(path, fmt, compression, encoding, name)
    return _finish(frame, name)


def load_hub_dataset(name: str, split: str | None = None, config: str | None = None) -> pd.DataFrame:
    """Load a Hugging Face hub dataset (needs internet) as a DataFrame with ``_row``."""
    where = f"hub dataset '{name}'" + (f" (config '{config}')" if config else "")
    try:
        import datasets

        loaded = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # offline, unknown dataset, bad config: all are for the user to fix
        raise DataError(
            f"{where}: could not load it ({type(err).__name__}: {_first_line(err)}). The Hugging Face hub is "
            "unreachable from here or the dataset does not exist; pass a local file (data.path) or a folder "
            "written by datasets' save_to_disk instead."
        ) from None
    if not hasattr(loaded, "to_pandas"):
        raise DataError(f"{where} has splits {sorted(loaded)}; choose one with split=.")
    return _finish(_with_class_names(loaded), where)


# --------------------------------------------------------------------------------------------------------------
# Locating the file and its format
# --------------------------------------------------------------------------------------------------------------


def _split_selector(path: str | Path) -> tuple[Path, str | None]:
    """'folder#train' -> (folder, 'train') when the literal path does not exist."""
    text = str(path)
    if "#" in text and not _exists(Path(text)):
        base, _, split = text.rpartition("#")
        if base and split:
            return Path(base), split
    return Path(text), None


def _exists(path: Path) -> bool:
    """Path.exists that says False for names the OS rejects (too long, NUL bytes) instead of raising."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def missing_file_message(path: Path) -> str:
    parent = path.parent
    if not _exists(parent) or not parent.is_dir():
        return f"{path}: file not found (the folder '{parent}' does not exist)."
    try:
        names = sorted(p.name for p in parent.iterdir())
    except OSError:
        names = []
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(str(parent / c)) for c in close)}?" if close else ""
    return f"{path}: file not found.{hint}"


def _detect_format(path: Path, fmt: str | None) -> tuple[str, str | None]:
    """(format, compression) from ``fmt`` or the file's suffixes."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = _COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if fmt is not None:
        key = fmt.lower().lstrip(".")
        key = {"ndjson": "jsonl", "pq": "parquet"}.get(key, key)
        if key not in SUPPORTED_FORMATS:
            raise DataError(f"{path}: unknown format '{fmt}' (data.format). Supported: {supported_formats_text()}.")
        return key, compression
    core = suffixes[:-1] if compression else suffixes
    found = _SUFFIX_FORMATS.get(core[-1]) if core else None
    if found is None:
        raise DataError(
            f"{path}: cannot tell the format from the name '{path.name}'. Rename it or set data.format. "
            f"Supported: {supported_formats_text()}; .csv/.tsv/.jsonl may end in .gz, .bz2 or .xz."
        )
    if compression and found == "parquet":
        raise DataError(f"{path}: a compressed Parquet file is not supported; Parquet compresses itself.")
    return found, compression


# --------------------------------------------------------------------------------------------------------------
# Bytes -> text
# --------------------------------------------------------------------------------------------------------------


def _read_bytes(path: Path, compression: str | None, name: str) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{name}: cannot read the file ({err.strerror or err}).") from None
    if compression is None:
        return raw
    try:
        return _DECOMPRESS[compression](raw)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as err:
        raise DataError(f"{name}: not a valid {compression} file ({err}); check it or drop the suffix.") from None


def _decode(raw: bytes, encoding: str | None, name: str) -> str:
    """Decode bytes, stripping a BOM; a bad byte is reported with its line and byte offset."""
    encoding = encoding or bom_codec(raw)
    try:
        codec = codecs.lookup(encoding or "utf-8").name
        "".encode(codec)  # hex, base64, rot13...: codecs, but not of text (str.encode refuses them)
    except LookupError:
        raise DataError(f"{name}: unknown encoding '{encoding}' (data.encoding); try utf-8 or latin-1.") from None
    nul = raw.find(b"\x00", 0, 1 << 16)
    if nul >= 0 and not codec.startswith(("utf-16", "utf-32")):  # text in these codecs never holds a NUL byte
        raise DataError(
            f"{name}: looks like a binary file, not text (a NUL byte at byte offset {nul}). Point the config at the "
            f"data file itself; text formats: csv, tsv, jsonl, json (also .gz/.bz2/.xz), or Parquet."
        )
    skip = 0
    if codec in ("utf-8", "utf-8-sig"):
        codec = "utf-8"
        skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode(codec) if skip else raw.decode(codec)
    except UnicodeDecodeError as err:
        offset = err.start + skip
        line = raw[:offset].count(b"\n") + 1
        bad = raw[offset:offset + 1].hex()
        hint = _ENCODING_HINT if codec == "utf-8" else "check data.encoding"
        raise DataError(
            f"{name}: line {line} is not valid {codec} (byte 0x{bad} at byte offset {offset}); {hint}, "
            "or re-save the file as UTF-8."
        ) from None


# --------------------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------------------


def _read_file(path: Path, fmt: str, compression: str | None, encoding: str | None, name: str) -> pd.DataFrame:
    if fmt == "parquet":
        return _read_parquet(path, name)
    raw = _read_bytes(path, compression, name)
    if not raw or raw.isspace():
        raise DataError(f"{name}: the file is empty.")
    text = _decode(raw, encoding, name)
    del raw
    if text.isspace():
        raise DataError(f"{name}: the file is empty (only whitespace).")
    if fmt in ("csv", "tsv"):
        return _read_delimited(text, "," if fmt == "csv" else "\t", name)
    if fmt == "jsonl":
        return _read_jsonl(text, name)
    if fmt == "conll":
        from adaptlab.data.conll import read_conll

        return read_conll(text, name)
    return _read_json(text, name)


def _raise_field_size_limit() -> None:
    """Let the csv module (used to locate errors) read enormous fields."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


#: Separators a delimited file may use instead of the one its suffix says, and how to read such a file.
_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars", ",": "commas"}


def _check_separator(columns: list[str], sep: str, name: str) -> None:
    """A header read as a single column that holds another separator (a semicolon CSV, as spreadsheets in many
    locales save it; a tab-separated file named .csv): DataError saying so, not a "column not found" later."""
    found = [s for s in _OTHER_SEPARATORS if s != sep and s in columns[0]] if len(columns) == 1 else []
    if not found:
        return
    fix = ("name it .tsv or set data.format: tsv" if found[0] == "\t" else
           "name it .csv or set data.format: csv" if found[0] == "," else "save it again with commas as separators")
    raise DataError(f"{name}: the header line {short(columns[0])!r} reads as one column: the file looks separated by "
                    f"{_OTHER_SEPARATORS[found[0]]}, not {_OTHER_SEPARATORS[sep]}; {fix}.")


def _read_delimited(text: str, sep: str, name: str) -> pd.DataFrame:
    """CSV/TSV: every cell as text, header from the first line, ragged rows reported by line."""
    try:
        # UTF-8 bytes parse about twice as fast as a text buffer ("replace" only ever hits lone surrogates).
        buffer = io.BytesIO(text.encode("utf-8", "replace"))
        cells = pd.read_csv(buffer, encoding="utf-8", sep=sep, header=None, dtype=str, keep_default_na=False,
                            na_filter=False, engine="c", index_col=False)
        del buffer
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: the file has no header line and no columns.") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as err:
        raise DataError(_parser_error_message(text, sep, err, name)) from None
    header = [str(h).strip() for h in cells.iloc[0].tolist()]
    columns = [h if h else f"Unnamed: {i}" for i, h in enumerate(header)]
    _check_separator(columns, sep, name)
    _check_duplicate_columns(columns, name, "header line")
    if len(cells) < 2:
        raise DataError(f"{name}: the file has a header line ({', '.join(map(short, columns))}) but no data rows.")
    frame = cells.iloc[1:].reset_index(drop=True)
    frame.columns = columns
    if _one_line_per_record(text, len(cells)):
        frame.attrs["line_offset"] = 1
    return frame


def _one_line_per_record(text: str, records: int) -> bool:
    """True when no blank lines and no quoted newlines, so row r is on line r + 1."""
    body = text.rstrip("\r\n")
    lines = body.count("\n") + 1 if "\r" not in body else len(re.findall(r"\r\n|\r|\n", body)) + 1
    return lines == records


def _parser_error_message(text: str, sep: str, err: Exception, name: str) -> str:
    """Turn a pandas tokenizer error into 'line N has K fields, the header has M' or 'unclosed quote on line N'."""
    message = str(err).strip()
    fix = f"Quote cells that contain the separator {sep!r}, or fix the row."
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    eof = re.search(r"EOF inside string starting at row (\d+)", message)
    located = _locate_bad_record(text, sep)
    if fields:
        expected, line, saw = fields.groups()
        if located and located[0] == "ragged":
            line, saw = str(located[1]), str(located[2])
        return f"{name}: line {line} has {saw} fields but the header has {expected}. {fix}"
    if eof:
        line = located[1] if located and located[0] == "last" else int(eof.group(1)) + 1
        return f"{name}: a quote (\") opened on line {line} is never closed. Close it; in a quoted cell write \"\"."
    return f"{name}: cannot parse the file as {'CSV' if sep == ',' else 'TSV'} ({_first_line(err)})."


def _locate_bad_record(text: str, sep: str) -> tuple[str, int, int] | None:
    """Exact physical line of the first over-long record ('ragged', line, fields), else of the last record
    ('last', line, fields): the one an unclosed quote runs to the end of the file."""
    _raise_field_size_limit()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=False)
    width = None
    start = 1
    last = None
    try:
        for record in reader:
            if record:
                if width is None:
                    width = len(record)
                elif len(record) > width:
                    return "ragged", start, len(record)
                last = ("last", start, len(record))
            start = reader.line_num + 1
    except csv.Error:
        return None
    return last


def _read_jsonl(text: str, name: str) -> pd.DataFrame:
    """One JSON object per line; blank lines are skipped (only ``\\n``, ``\\r\\n`` and ``\\r`` end a line)."""
    records: list[dict[str, Any]] = []
    blank_inside = False
    blank_seen = False
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        if not line.strip():
            blank_seen = True
            continue
        blank_inside = blank_inside or blank_seen
        value = _loads(line, name, where=f"line {number}")
        if not isinstance(value, dict):
            raise DataError(
                f"{name}: line {number} is a JSON {_json_type(value)}, not an object; each line of a JSONL file "
                'must be one object such as {"text": "...", "label": "..."}.'
            )
        records.append(value)
    frame = _frame_from_records(records, name)
    if not blank_inside:
        frame.attrs["line_offset"] = 0
    return frame


def _read_json(text: str, name: str) -> pd.DataFrame:
    """A JSON list of objects."""
    value = _loads(text, name, where=None)
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list)]
        hint = f" Your records may be under the key '{lists[0]}'; save that list on its own." if lists else ""
        raise DataError(f"{name}: expected a JSON list of objects, found an object.{hint}")
    if not isinstance(value, list):
        raise DataError(f"{name}: expected a JSON list of objects, found a {_json_type(value)}.")
    for i, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{name}: item {i} of the list is a JSON {_json_type(item)}, not an object.")
    return _frame_from_records(value, name)


def _loads(text: str, name: str, where: str | None) -> Any:
    """json.loads that rejects duplicate keys and reports the line of a syntax error."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        counts = Counter(k for k, _ in pairs)
        dupes = sorted(short(k) for k, n in counts.items() if n > 1)
        if dupes:
            place = f"{where}" if where else "an object"
            raise DataError(f"{name}: {place} has the key(s) {dupes} more than once; keep one of each.")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        if where:
            raise DataError(f"{name}: {where} is not valid JSON ({err.msg} at column {err.colno}).") from None
        hint = ""
        if err.msg == "Extra data" and err.lineno > 1:
            hint = " It looks like JSON Lines (one object per line): rename it to .jsonl or set data.format: jsonl."
        raise DataError(f"{name}: line {err.lineno} is not valid JSON ({err.msg} at column {err.colno}).{hint}") \
            from None
    except RecursionError:
        raise DataError(f"{name}: {where or 'the file'} is nested too deeply to read.") from None
    except ValueError as err:  # e.g. an integer with more than 4300 digits
        raise DataError(f"{name}: {where or 'the file'} holds a value Python cannot read ({_first_line(err)}).") \
            from None


def _json_type(value: Any) -> str:
    names = {list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _frame_from_records(records: list[dict[str, Any]], name: str) -> pd.DataFrame:
    """Columns in first-seen order; values keep their JSON types (None where a key is absent)."""
    if not records:
        raise DataError(f"{name}: the file has no records.")
    columns: dict[str, None] = {}
    for record in records:
        for key in record:
            columns.setdefault(key, None)
    data = {key: [record.get(key) for record in records] for key in columns}
    if not data:
        raise DataError(f"{name}: the records have no fields (no columns).")
    return pd.DataFrame(data, dtype=object)


def _read_parquet(path: Path, name: str) -> pd.DataFrame:
    try:
        import pyarrow

        arrow_errors: tuple[type[BaseException], ...] = (pyarrow.ArrowException,)
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        arrow_errors = ()
    try:
        frame = pd.read_parquet(path)
    except (*arrow_errors, OSError, ValueError, TypeError, KeyError, IndexError) as err:
        raise DataError(f"{name}: cannot read it as Parquet ({type(err).__name__}: {_first_line(err)}).") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True)


def _read_saved_dataset(path: Path, split: str | None, name: str) -> pd.DataFrame:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    if not any((path / marker).exists() for marker in _DATASET_MARKERS):
        raise DataError(
            f"{name}: is a folder without dataset_info.json/state.json, so not a datasets save_to_disk folder. "
            f"Point data.path at a file. Supported: {supported_formats_text()}."
        )
    try:
        import datasets

        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # corrupt or foreign folders raise many kinds of errors
        raise DataError(f"{name}: cannot load the saved dataset ({type(err).__name__}: {_first_line(err)}).") \
            from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded)
        if split is None:
            example = "train" if "train" in splits else splits[0]
            raise DataError(
                f"{name}: holds several splits ({', '.join(splits)}); say which with '{name}#{example}'."
            )
        if split not in loaded:
            from adaptlab.errors import did_you_mean

            raise DataError(f"{name}: no split '{split}'.{did_you_mean(split, splits)} Splits: {', '.join(splits)}.")
        loaded = loaded[split]
    elif split is not None:
        raise DataError(f"{name}: holds a single dataset, not splits; drop '#{split}'.")
    frame = _with_class_names(loaded)
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _with_class_names(dataset: Any) -> pd.DataFrame:
    """A ``datasets.Dataset`` as a DataFrame, its ``ClassLabel`` columns (and lists of them, such as NER tags) as
    their class names, not the integers stored: the labels the report shows and zero-shot rungs read. -1 (the
    library's "no label") becomes missing."""
    import datasets

    def name(label: Any, value: Any) -> str | None:  # a ClassLabel
        return None if value is None or pd.isna(value) or value < 0 else label.int2str(int(value))

    frame = dataset.to_pandas()
    for column, feature in dataset.features.items():
        inner = feature.feature if isinstance(feature, (datasets.Sequence, datasets.List)) else None
        if isinstance(feature, datasets.ClassLabel):
            frame[column] = [name(feature, v) for v in frame[column]]
        elif isinstance(inner, datasets.ClassLabel):
            frame[column] = [None if v is None else [name(inner, x) for x in v] for v in frame[column]]
    return frame


# --------------------------------------------------------------------------------------------------------------
# Common checks
# --------------------------------------------------------------------------------------------------------------


def _check_duplicate_columns(columns: list[str], name: str, where: str) -> None:
    seen: dict[str, list[int]] = {}
    for i, column in enumerate(columns, start=1):
        seen.setdefault(column, []).append(i)
    dupes = {c: pos for c, pos in seen.items() if len(pos) > 1}
    if dupes:
        listed = "; ".join(f"'{short(c)}' (columns {', '.join(map(str, pos))})" for c, pos in dupes.items())
        raise DataError(f"{name}: the {where} names a column more than once: {listed}. Give each column its own name.")


def _finish(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check the columns and add the 1-based ``_row`` column."""
    columns = [str(c) for c in frame.columns]
    if not columns:
        raise DataError(f"{name}: the data has no columns.")
    _check_duplicate_columns(columns, name, "data")
    if ROW_COLUMN in columns:
        raise DataError(f"{name}: the column name '{ROW_COLUMN}' is reserved by adaptlab; rename that column.")
    if len(frame) == 0:
        raise DataError(f"{name}: the data has no rows.")
    frame = frame.reset_index(drop=True)
    frame[ROW_COLUMN] = range(1, len(frame) + 1)
    return frame


def short(text: str, limit: int = 60) -> str:
    """A column name or value cut for an error message."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
