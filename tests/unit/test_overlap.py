"""The ladder's overlap check: held-out examples whose input also occurs in the training split are counted (whatever
the task says its input is), recorded in leaderboard.json, warned about and repeated in the report."""

from __future__ import annotations

import json
import logging

import pytest
from tests.conftest import sentiment_rows, write_config

from adaptlab.config import LadderSpec, load_ladder
from adaptlab.data.overlap import chat_text, joined, normalise, overlap, overlap_warning, split_overlap
from adaptlab.data.source import load_frames
from adaptlab.tasks import get_task


def test_inputs_equal_but_for_case_and_spacing_are_counted_with_their_ids():
    found = overlap(["The  film was GREAT", "dull"], ["the film was great\n", "a new one", "DULL", "ｄｕｌｌ"],
                    ["7", "8", "9", "10"])
    assert found == {"examples": 4, "in_train": 3, "share": 0.75, "ids": ["7", "9", "10"]}  # full-width: NFKC
    # the parts of a pair keep their boundary; chat turns are compared as text, their spacing normalised too
    assert overlap([joined("a b", "c")], [joined("a", "b c"), joined("A  B", "c")], ["1", "2"])["ids"] == ["2"]
    turn = [{"role": "user", "content": "hello\nworld"}]
    assert normalise(chat_text(turn)) == normalise(chat_text([{"role": "user", "content": "Hello world"}]))
    assert normalise(chat_text(turn)) != normalise(chat_text([{"role": "system", "content": "hello world"}]))


def test_the_warning_names_the_count_and_rows_and_a_hand_edited_leaderboard_gives_none():
    assert overlap_warning({"test": overlap(["a"], ["b"], ["1"])}) is None
    assert overlap_warning({"validation": overlap(["a"], ["a"], ["1"])}) is None  # only the test split is warned of
    message = overlap_warning({"test": overlap(["a", "b"], ["A", "c", "B", "d"], ["4", "5", "6", "7"])})
    assert message.startswith("2 of the 4 test examples (50.0%) also occur in the training split")
    assert "test rows 4, 6)" in message
    many = overlap_warning({"test": overlap(["x"], ["x"] * 30, [str(i) for i in range(30)])})
    assert "test rows 0, 1," in many and "19, ...)" in many and " 20" not in many
    for bad in (None, [], {"test": "x"}, {"test": {"in_train": "3", "examples": 4}},
                {"test": {"in_train": 5, "examples": 4}}, {"test": {"in_train": True, "examples": True}}):
        assert overlap_warning(bad) is None
    no_ids = overlap_warning({"test": {"in_train": 1, "examples": 4, "ids": "12"}})
    assert no_ids.startswith("1 of the 4 test examples (25.0%)") and "rows" not in no_ids


def _prepared(tmp_path, task: dict, train: list[dict], test: list[dict], data: dict | None = None):
    for name, rows in (("train", train), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = LadderSpec.model_validate({
        "name": "t", "task": task, "model": "minilm", "rungs": [{"method": "linear_probe"}], "base_dir": tmp_path,
        "data": {"train": "train.jsonl", "test": "test.jsonl", "validation_size": 0.0, **(data or {})}})
    chosen = get_task(task["type"])
    return chosen, chosen.prepare(spec, load_frames(spec, chosen.stratify_role))


def _ner(words: str) -> dict:
    tokens = words.split()
    return {"tokens": tokens, "tags": ["B-PER" if t.istitle() else "O" for t in tokens]}


CASES = {  # the task, its training rows, a training row repeated (as the test split may write it), a new row
    "classification": ({"type": "classification"},
                       [{"text": f"review {i}", "label": "pos" if i % 2 else "neg"} for i in range(8)],
                       lambda r: {**r, "text": r["text"].upper()}, {"text": "review nine", "label": "pos"}),
    "generation": ({"type": "generation"}, [{"prompt": f"say {i}", "completion": f"{i}"} for i in range(8)],
                   lambda r: {**r, "prompt": f"  {r['prompt']}  ", "completion": "another answer"},
                   {"prompt": "say nine", "completion": "9"}),
    "token_classification": ({"type": "token_classification"},
                             [_ner(f"Ann met {w} there") for w in ("Bob", "Cy", "Di", "Ed", "Flo", "Gus")],
                             lambda r: _ner(" ".join(r["tokens"]).replace("there", "THERE")),
                             _ner("Ann met Zed there")),
    "embedding": ({"type": "embedding", "score_range": [0, 5]},
                  [{"sentence1": f"a man plays {w}", "sentence2": f"someone plays {w}", "score": i % 5}
                   for i, w in enumerate(["guitar", "piano", "drums", "flute", "harp", "violin"])],
                  lambda r: {**r, "score": 0},  # the same pair with another score: the input is the pair
                  {"sentence1": "a man plays guitar", "sentence2": "someone plays cello", "score": 2}),
    "preference": ({"type": "preference"},
                   [{"prompt": f"tell me about {w}", "chosen": f"{w} is grand", "rejected": "no"}
                    for w in ("kings", "ghosts", "swords", "rivers", "storms", "crowns")],
                   lambda r: {**r, "prompt": r["prompt"].title()},
                   {"prompt": "tell me about owls", "chosen": "owls are grand", "rejected": "no"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_task_says_what_its_input_is_and_a_repeated_input_is_found(tmp_path, name):
    task, train, repeat, fresh = CASES[name]
    chosen, data = _prepared(tmp_path, task, train, [fresh, repeat(train[3]), train[1]])
    found = split_overlap(chosen, data)
    assert set(found) == {"test"}  # no validation split here
    assert found["test"]["in_train"] == 2 and found["test"]["ids"] == ["2", "3"]


def test_a_ladder_records_the_overlap_warns_and_the_report_repeats_it(tmp_path, tiny_bert, caplog):
    import csv

    from adaptlab.pipeline import compare, prepare
    from adaptlab.reporting.report import write_report

    rows = sentiment_rows(40)
    train = [{**r, "text": f"{r['text']} {i}"} for i, r in enumerate(rows)]  # every text distinct
    for name, part in (("train", train), ("test", [train[0], {**train[5], "text": train[5]["text"].upper()},
                                                   *sentiment_rows(6, seed=9)])):
        with (tmp_path / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(part)
    config = write_config(tmp_path, tmp_path / "train.csv", tiny_bert, [{"method": "linear_probe"}])
    spec = load_ladder(config).model_copy(update={"data": load_ladder(config).data.model_copy(
        update={"path": None, "train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")})})
    with caplog.at_level(logging.WARNING):
        board = compare(prepare(spec))
    assert board["overlap"]["test"]["in_train"] == 2 and board["overlap"]["test"]["ids"] == ["1", "2"]
    assert "2 of the 8 test examples (25.0%) also occur in the training split" in caplog.text
    saved = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert saved["overlap"] == board["overlap"]
    write_report([tmp_path / "out"], tmp_path / "out", quiet=True)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "2 of the 8 test examples (25.0%)" in markdown.split("## Warnings")[1]


def test_every_registered_task_has_a_case_here():
    """A new task implements ``inputs`` and is checked above: add its case to CASES."""
    from adaptlab.tasks import TASKS

    assert sorted(CASES) == sorted(TASKS.names())
