"""Configs and data nobody showed us: each gets a clear error naming the file, row or key before any rung runs (or is
read as the user meant), never a traceback, a silent misreading or a user's folder replaced."""

from __future__ import annotations

import codecs
import csv
import json
import lzma
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tests.conftest import sentiment_rows, write_config, write_sentiment_csv

from adaptlab.config import load_ladder, parse_ladder
from adaptlab.errors import ConfigError, DataError, UserError


def ladder(**overrides) -> dict:
    return {"name": "t", "task": {"type": "classification"}, "data": {"path": "d.csv"}, "model": "tiny-random-bert",
            "rungs": [{"method": "linear_probe"}], **overrides}


def problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_ladder(raw)
    return str(err.value)


def test_a_folder_of_the_users_where_a_rung_would_publish_stops_the_ladder_before_it_runs(tmp_path, tiny_bert):
    from adaptlab.pipeline import prepare

    config = write_config(tmp_path, write_sentiment_csv(tmp_path / "d.csv", 40), "tiny-random-bert",
                          [{"method": "linear_probe"}])
    notes = tmp_path / "out" / "linear_probe" / "my_notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    with pytest.raises(UserError, match=r"out/linear_probe' exists and is not an adaptlab run"):
        prepare(load_ladder(config))
    assert notes.read_text() == "mine"
    (notes.parent / "run.json").write_text("{}")  # an earlier run of the rung: replaced as before
    prepare(load_ladder(config))
    for name in ("ladder.json", "leaderboard.json", "tuning", "report.html"):
        assert "what the ladder names one of its own" in problems(ladder(rungs=[{"method": "lora", "name": name}]))


def test_a_task_given_as_a_list_or_mapping_is_a_config_problem_not_a_crash():
    for task in (["classification"], {"type": ["x"]}, {"type": {"a": 1}}):
        assert "give the task's name" in problems(ladder(task=task))


def test_an_unknown_task_key_names_the_task_s_own_keys():
    for task, typo, hint in (({"type": "classification", "lables": ["a"]}, "task.lables", "labels"),
                             ({"type": "generation", "generation": {"max_new_token": 3}},
                              "task.generation.max_new_token", "max_new_tokens"),
                             ({"type": "token_classification", "tag_column": "x"}, "task.tag_column", "tags_column")):
        message = problems(ladder(task=task))
        assert f"{typo}: unknown key. Did you mean '{hint}'? Allowed keys: " in message and "Allowed keys: ." not in \
            message


def test_an_infinite_or_astronomical_setting_is_a_config_problem_not_a_crash():
    inf = float("inf")
    for params, message in (({"epochs": inf}, "finite number"), ({"epochs": 1e300}, "less than or equal"),
                            ({"learning_rate": inf}, "finite number"), ({"C": inf}, "finite number")):
        method = "linear_probe" if "C" in params else "head_only"
        assert message in problems(ladder(rungs=[{"method": method, "params": params}])), params
    assert "finite number" in problems(ladder(tuning={"trials": 2, "minutes": float("inf")}))  # a config section


def test_params_that_are_no_mapping_are_reported_once():
    found = problems(ladder(rungs=[{"method": "lora", "params": [1, 2]}]))
    assert found.count("rungs[0].params") == 1 and "valid dictionary" in found


def test_repeated_labels_are_refused():
    assert "'pos' listed more than once" in problems(ladder(task={"type": "classification",
                                                                 "labels": ["pos", "neg", "pos"]}))


def test_a_key_given_twice_is_refused_and_a_utf16_config_is_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: t\ndata: {path: a.csv}\nmodel: tiny-random-bert\ndata: {path: b.csv}\n"
                    "rungs: [{method: linear_probe}]\n")
    with pytest.raises(UserError, match=r"line 4.*'data' is given twice in one section \(lines 2 and 4\)"):
        load_ladder(path)
    path.write_text("base: &b {path: a.csv, test_size: 0.3}\nname: t\ndata:\n  <<: *b\n  path: b.csv\n"
                    "model: tiny-random-bert\nrungs: [{method: linear_probe}]\n")
    with pytest.raises(ConfigError, match="base: unknown key"):  # a merge's keys overridden is no repeat
        load_ladder(path)
    path.write_bytes(codecs.BOM_UTF16_LE + yaml.safe_dump(ladder()).encode("utf-16-le"))
    assert load_ladder(path).data.path == "d.csv"


def test_a_model_folder_next_to_the_config_and_a_home_output_dir(tmp_path, monkeypatch):
    (tmp_path / "cfg" / "mymodel").mkdir(parents=True)
    path = tmp_path / "cfg" / "c.yaml"
    path.write_text(yaml.safe_dump(ladder(model="./mymodel", output_dir="~/runs_x")))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    spec = load_ladder(path)
    assert Path(spec.model) == tmp_path / "cfg" / "mymodel"
    assert spec.output_path() == tmp_path / "home" / "runs_x"
    path.write_text(yaml.safe_dump(ladder(model="./elsewhere")))
    assert load_ladder(path).model == "./elsewhere"  # not next to the config: as written


def test_models_named_inside_sections_are_found_next_to_the_config_as_the_ladder_s_model_is(tmp_path, monkeypatch):
    from adaptlab.config import rung_params

    folder = tmp_path / "configs"
    for name in ("judge", "embedder", "tagger"):
        (folder / name).mkdir(parents=True)
    raw = ladder(task={"type": "generation", "judges": {"llm_judge": {"model": "./judge"}, "against": "few"}},
                 rungs=[{"method": "few_shot_prompt", "name": "few", "params": {"embedding_model": "./embedder"}},
                        {"method": "lm_lora", "params": {}}])
    (folder / "c.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)  # not the config's folder
    spec = load_ladder(Path("configs/c.yaml"))
    assert Path(spec.task.judges.llm_judge.model).resolve() == folder / "judge"
    assert Path(rung_params(spec.rungs[0]).embedding_model).resolve() == folder / "embedder"
    assert rung_params(spec.rungs[0].model_copy()).embedding_model == rung_params(spec.rungs[0]).embedding_model
    monkeypatch.chdir(folder)  # the same config from its own folder: the same models, so the same rung hashes
    here = load_ladder(Path("c.yaml"))
    assert here.task.judges.llm_judge.model == spec.task.judges.llm_judge.model
    assert rung_params(here.rungs[0]).embedding_model == rung_params(spec.rungs[0]).embedding_model
    monkeypatch.chdir(tmp_path)
    tagging = ladder(task={"type": "token_classification"},
                     rungs=[{"method": "ner_prompt", "params": {"model": "./tagger"}},
                            {"method": "ner_prompt", "name": "absent", "params": {"model": "./nowhere"}}])
    (folder / "c.yaml").write_text(yaml.safe_dump(tagging))
    first, absent = load_ladder(Path("configs/c.yaml")).rungs
    assert Path(rung_params(first).model).resolve() == folder / "tagger"
    assert rung_params(absent).model == "./nowhere"  # not there: left as written (relative to where you run)


def frames_of(tmp_path: Path, data: dict, task: dict | None = None) -> dict:
    from adaptlab.data.source import load_frames
    from adaptlab.tasks import get_task

    config = tmp_path / "c.yaml"
    rungs = [{"method": "lm_lora" if (task or {}).get("type") == "generation" else "lora"}]
    config.write_text(yaml.safe_dump(ladder(data=data, rungs=rungs, **({"task": task} if task else {}))))
    spec = load_ladder(config)
    return get_task(spec.task.type).prepare(spec, load_frames(spec))


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_problem_in_the_validation_file_names_the_validation_file(tmp_path):
    write_sentiment_csv(tmp_path / "tr.csv", 40)
    rows = sentiment_rows(10, seed=1)
    rows[0]["text"] = ""
    write_rows(tmp_path / "va.csv", rows)
    with pytest.raises(DataError, match=r"va\.csv: column 'text' is empty in 1 row: row 1"):
        frames_of(tmp_path, {"train": "tr.csv", "validation": "va.csv"})


def test_an_encoding_that_is_no_text_encoding_is_a_data_error(tmp_path):
    write_sentiment_csv(tmp_path / "d.csv", 40)
    for encoding in ("hex", "base64", "rot13", "no-such-codec"):
        with pytest.raises(DataError, match=f"unknown encoding '{encoding}'"):
            frames_of(tmp_path, {"path": "d.csv", "encoding": encoding})
    (tmp_path / "d16.csv").write_bytes((tmp_path / "d.csv").read_text().encode("utf-16"))
    assert len(frames_of(tmp_path, {"path": "d16.csv", "encoding": "utf-16", "test_size": 0.25}).test.texts) == 10


def test_xz_compressed_data_is_read(tmp_path):
    plain = write_sentiment_csv(tmp_path / "d.csv", 40).read_bytes()
    (tmp_path / "d.csv.xz").write_bytes(lzma.compress(plain))
    assert len(frames_of(tmp_path, {"path": "d.csv.xz", "test_size": 0.25}).test.texts) == 10


def test_lists_dicts_and_bytes_are_not_taken_as_text_or_labels(tmp_path):
    rows = [{"text": t["text"], "label": t["label"]} for t in sentiment_rows(20)]
    cases = [("label", ["pos"], "holds a list, not a label"), ("text", {"a": 1}, "holds an object, not text")]
    for column, value, message in cases:
        odd = [dict(r) for r in rows]
        odd[3][column] = value
        (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in odd) + "\n")
        with pytest.raises(DataError, match=f"column '{column}' {message}, in 1 row: row 4"):
            frames_of(tmp_path, {"path": "d.jsonl"})
    frame = pd.DataFrame(rows)
    frame["text"] = [t.encode() for t in frame["text"]]
    frame.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match="column 'text' holds bytes, not text"):
        frames_of(tmp_path, {"path": "d.parquet"})
    both = [dict(r) for r in rows]
    both[5]["label"], both[7]["label"] = ["pos"], {"a": 1}
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in both) + "\n")
    with pytest.raises(DataError, match=r"column 'label' holds a list or an object, not a label, in 2 rows: "
                       r"rows 6 \(line 6\), 8"):
        frames_of(tmp_path, {"path": "d.jsonl"})


def test_every_missing_label_of_a_file_is_named_at_once_in_file_order(tmp_path):
    rows = [{"text": t["text"], "label": t["label"]} for t in sentiment_rows(40)]
    for i in (34, 4, 9):
        rows[i]["label"] = ""
    write_rows(tmp_path / "d.csv", rows)  # whichever split each lands in, one message names all three
    with pytest.raises(DataError, match=r"d\.csv: column 'label' has no label in 3 rows: rows 5 \(line 6\), 10 "
                       r"\(line 11\), 35 \(line 36\)"):
        frames_of(tmp_path, {"path": "d.csv"})


def test_a_chat_test_file_without_the_messages_column_names_it(tmp_path):
    chat = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"yo {i}"}]}
            for i in range(12)]
    (tmp_path / "tr.jsonl").write_text("\n".join(json.dumps(r) for r in chat) + "\n")
    (tmp_path / "te.jsonl").write_text("\n".join(json.dumps({"prompt": "x", "reply": "y"}) for _ in range(3)) + "\n")
    with pytest.raises(DataError, match=r"te\.jsonl: column 'messages' .* not found"):
        frames_of(tmp_path, {"train": "tr.jsonl", "test": "te.jsonl"}, task={"type": "generation"})


def test_chat_messages_beside_an_input_output_pair_say_which_was_read(tmp_path, caplog):
    rows = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"yo {i}"}],
             "prompt": f"p {i}", "completion": f"c {i}"} for i in range(12)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    frames_of(tmp_path, {"path": "d.jsonl"}, task={"type": "generation"})
    assert "read the 'messages' column as chat messages and ignored the prompt/completion columns" in caplog.text
    caplog.clear()
    frames_of(tmp_path, {"path": "d.jsonl", "messages_column": "messages"}, task={"type": "generation"})
    assert "ignored" not in caplog.text  # chosen in the config: nothing to say
    assert "not both" in problems(ladder(data={"path": "d.jsonl", "messages_column": "m", "target_column": "t"}))


def tagged(tmp_path: Path, sentences: list[tuple[list[str], list[str]]]) -> None:
    rows = [{"tokens": tokens, "tags": tags} for tokens, tags in sentences]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_tags_that_no_scheme_writes_and_swapped_columns_are_refused(tmp_path):
    good = [(["Ann", "met", "Bob"], ["B-PER", "O", "B-PER"])] * 12
    for tag, message in (("o", "the outside tag is the capital letter O"), ("0", "capital letter O"),
                         ("B-", "has no entity type"), ("B_PER", r"hyphen \(B-PER\)")):
        tagged(tmp_path, [*good, (["Ann", "met", "Bob"], ["B-PER", tag, "B-PER"])])
        with pytest.raises(DataError, match=f"row 13: tag 2 \\('{tag}'\\) .*{message}"):
            frames_of(tmp_path, {"path": "d.jsonl"}, task={"type": "token_classification"})
    words = [f"w{i}" for i in range(400)]
    swapped = [(["O"] * 4, words[i:i + 4]) for i in range(0, 400, 4)]
    tagged(tmp_path, swapped)
    with pytest.raises(DataError, match=r"d\.jsonl: most training .*entity types .* the tokens and tags columns look "
                       "swapped"):
        frames_of(tmp_path, {"path": "d.jsonl", "test_size": 0.1}, task={"type": "token_classification"})
    tagged(tmp_path, [(["Ann", "met", "Bob"], ["O", "O", "O"])] * 12)
    with pytest.raises(DataError, match=r"d\.jsonl: the training split has no entities"):
        frames_of(tmp_path, {"path": "d.jsonl"}, task={"type": "token_classification"})
    many = [([f"w{i}" for i in range(150)], [f"B-T{i}" for i in range(150)])] * 12  # fine-grained types
    tagged(tmp_path, many)
    assert len(frames_of(tmp_path, {"path": "d.jsonl"}, task={"type": "token_classification"}).entity_types) > 100
    tagged(tmp_path, [(["Ann", "in", "Paris"], ["PER", "O", "LOC"])] * 12)  # IO's bare types are still tags
    assert frames_of(tmp_path, {"path": "d.jsonl"}, task={"type": "token_classification"}).entity_types == \
        ["LOC", "PER"]


def test_a_forgetting_text_that_can_not_be_read_stops_the_ladder_before_any_rung(tmp_path, session_home):
    from tests.generative_data import write_generation_csv, write_ladder

    from adaptlab.pipeline import prepare

    data = write_generation_csv(tmp_path / "g.csv", 24)
    for text, message in (("nofile.txt", "is neither a builtin text"), ("latin.txt", "cannot read .* as UTF-8")):
        (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
        config = write_ladder(tmp_path, data, "tiny-random-gpt2", [{"method": "lm_lora", "params": {"max_steps": 1}}],
                              task={"type": "generation", "forgetting_text": text})
        with pytest.raises(UserError, match=message):
            prepare(load_ladder(config))
        assert not (tmp_path / "out").exists()


def test_alpaca_rows_keep_the_instruction_and_their_optional_input(tmp_path):
    rows = [{"instruction": f"Translate word {i}", "input": "" if i % 2 else f"word{i}", "output": f"mot{i}"}
            for i in range(12)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = frames_of(tmp_path, {"path": "a.jsonl", "test_size": 0.25}, task={"type": "generation"})
    splits = (data.train, data.validation, data.test)
    pairs = {ref: x for split in splits for ref, x in zip(split.references, split.inputs)}
    assert len(pairs) == 12
    assert pairs["mot0"] == "Translate word 0\n\nword0" and pairs["mot1"] == "Translate word 1"
    with pytest.raises(DataError, match="data.text_column is 'input' but data.target_column is not set"):
        frames_of(tmp_path, {"path": "a.jsonl", "text_column": "input"}, task={"type": "generation"})
    (tmp_path / "te.jsonl").write_text("\n".join(json.dumps({"instruction": f"Say {i}", "output": f"{i}"})
                                                 for i in range(3)) + "\n")  # a test file without inputs
    data = frames_of(tmp_path, {"train": "a.jsonl", "test": "te.jsonl"}, task={"type": "generation"})
    assert data.test.inputs == ["Say 0", "Say 1", "Say 2"]
    both = [{**r, "prompt": r["instruction"].upper(), "completion": r["output"]} for r in rows]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in both) + "\n")
    data = frames_of(tmp_path, {"path": "b.jsonl"}, task={"type": "generation"})
    assert data.train.inputs[0].startswith("TRANSLATE WORD")  # prompt/completion, as before Alpaca was known


def test_fewer_training_examples_than_classes_names_the_setting(tmp_path):
    rows = [{"text": f"text {i}", "label": "abcde"[i % 5]} for i in range(60)]
    write_rows(tmp_path / "d.csv", rows)
    with pytest.raises(DataError, match="data.max_train_examples is 3, fewer than the 5 classes"):
        frames_of(tmp_path, {"path": "d.csv", "max_train_examples": 3})
    assert len(frames_of(tmp_path, {"path": "d.csv", "max_train_examples": 10}).train.texts) == 10
    mixed = [{"text": f"text {i}", "label": [1, "1", 0, " 0"][i % 4]} for i in range(60)]  # two classes, written
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed), encoding="utf-8")  # two ways
    data = frames_of(tmp_path, {"path": "m.jsonl", "max_train_examples": 2})
    assert data.label_names == ["0", "1"] and sorted(data.train.labels.tolist()) == [0, 1]  # one of each


def test_a_saved_dataset_s_class_labels_are_read_as_their_names(tmp_path):
    import datasets

    from adaptlab.data.readers import read_table

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"]),
                                  "tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER"]))})
    saved = datasets.Dataset.from_dict({"text": ["bad", "good", "?", "??"], "label": [0, 1, -1, None],
                                        "tags": [[0], [1], [0, 1], [1]]}, features=features)
    saved.save_to_disk(str(tmp_path / "ds"))
    frame = read_table(tmp_path / "ds")
    assert frame["label"].tolist()[:2] == ["neg", "pos"] and frame["label"][2:].isna().all()  # -1 or None: none
    assert [list(t) for t in frame["tags"]] == [["O"], ["B-PER"], ["O", "B-PER"], ["B-PER"]]


def test_numeric_labels_in_the_config_name_the_classes_as_the_data_writes_them():
    task = parse_ladder(ladder(task={"type": "classification", "labels": [0, 1], "label_descriptions": {0: "bad"},
                                     "label_words": {1: "good", 0: "bad"}})).task
    assert (task.labels, task.label_descriptions, task.label_words) == (["0", "1"], {"0": "bad"},
                                                                        {"1": "good", "0": "bad"})
    booleans = parse_ladder(ladder(task={"type": "classification", "labels": ["True", False, " 2.0 "],
                                         "label_words": {True: "yes", "FALSE": "no"}})).task
    assert (booleans.labels, booleans.label_words) == (["true", "false", "2"], {"true": "yes", "false": "no"})
    pairs = parse_ladder(ladder(task={"type": "embedding", "positive_labels": ["True", 1.0]},
                                rungs=[{"method": "embedding_base"}])).task
    assert pairs.positive_labels == ["true", "1"]
    from adaptlab.judging.settings import RewardJudge
    assert RewardJudge(run="r", target_label=" TRUE ").target_label == "true"
    assert "base_dir" not in problems(ladder(datta={}))  # an internal field is no key to suggest


def test_a_max_length_below_what_special_tokens_need_is_refused():
    """A tokenizer asked for fewer tokens than its special tokens take doesn't truncate at all (BERT at 1 gave whole
    texts): the config refuses it."""
    assert "data.max_length" in problems(ladder(data={"path": "d.csv", "max_length": 1}))
    assert "greater than or equal to 8" in problems(ladder(data={"path": "d.csv", "max_length": 7}))
    parse_ladder(ladder(data={"path": "d.csv", "max_length": 8}))


def test_labels_alike_but_for_case_and_a_class_missing_from_the_test_split_are_warned_of(tmp_path, caplog):
    import logging

    rows = [{"text": f"text {i}", "label": ["pos", "neg", "POS "][i % 3]} for i in range(30)]
    write_rows(tmp_path / "tr.csv", rows)
    write_rows(tmp_path / "te.csv", [{"text": f"other {i}", "label": "pos"} for i in range(5)])
    with caplog.at_level(logging.WARNING):
        data = frames_of(tmp_path, {"train": "tr.csv", "test": "te.csv"})
    assert data.label_names == ["POS", "neg", "pos"]
    assert "differ only in case or spacing are separate classes: 'POS' / 'pos'" in caplog.text
    assert "the test split has no example of 'POS', 'neg'" in caplog.text
    caplog.clear()
    write_rows(tmp_path / "tr.csv", [{**r, "label": r["label"].strip().lower()} for r in rows])
    write_rows(tmp_path / "te.csv", [{"text": f"other {i}", "label": ["pos", "neg"][i % 2]} for i in range(6)])
    with caplog.at_level(logging.WARNING):
        frames_of(tmp_path, {"train": "tr.csv", "test": "te.csv"})
    assert "separate classes" not in caplog.text and "no example of" not in caplog.text


def test_a_csv_separated_by_semicolons_or_tabs_says_so(tmp_path):
    (tmp_path / "semi.csv").write_text("text;label\n" + "".join(f"film {i};pos\n" for i in range(10)))
    with pytest.raises(DataError, match=r"semi\.csv: the header line 'text;label' reads as one column: the file "
                       "looks separated by semicolons, not commas; save it again with commas"):
        frames_of(tmp_path, {"path": "semi.csv"})
    (tmp_path / "tabs.csv").write_text("text\tlabel\n" + "".join(f"film {i}\tpos\n" for i in range(10)))
    with pytest.raises(DataError, match=r"separated by tabs, not commas; name it \.tsv or set data\.format: tsv"):
        frames_of(tmp_path, {"path": "tabs.csv"})
    (tmp_path / "fine.tsv").write_text("text\tlabel\n" + "".join(f"a film; {i}\t{'pos' if i % 2 else 'neg'}\n"
                                                                  for i in range(20)))
    assert len(frames_of(tmp_path, {"path": "fine.tsv"}).train.texts) > 0  # a semicolon inside a text is just text
