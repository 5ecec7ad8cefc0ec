"""Rungs that start from another rung's output (``from:``), through the whole pipeline on tiny random GPT-2.

An ``lm_lora`` stage, then ``lm_full`` on top of it: the child records the dependency in run.json and provenance,
really starts from the parent's (merged) weights, ships a model that loads without the parent, and is invalidated
when the parent's settings change. A child of a failed or missing parent fails cleanly while the ladder goes on.
The metrics.json the pipeline writes reads back as a :class:`RungResult` unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
import yaml
from tests.generative_data import one_torch_thread, write_ladder, write_sentiment_csv  # noqa: F401 (autouse)

from adaptlab.config import load_ladder, parse_ladder
from adaptlab.pipeline import build_method, compare, finished_entry, load_run, prepare, rung_hash
from adaptlab.runs.result import RungResult

FAST = {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-2, "evals_per_epoch": 0, "logging_steps": 1}
RUNGS = [
    {"method": "lm_lora", "name": "sft", "params": FAST},
    {"method": "lm_full", "name": "full_after_sft", "from": "sft", "params": FAST},
    {"method": "lm_ia3", "name": "bad", "params": FAST},
    {"method": "lm_full", "name": "full_after_bad", "from": "bad", "params": FAST},
]


@pytest.fixture
def ladder(tmp_path, monkeypatch):
    from adaptlab.methods.lm_ia3 import LMIA3

    def broken_fit(self, data, workdir, resume=False):
        raise RuntimeError("boom")

    monkeypatch.setattr(LMIA3, "fit", broken_fit)  # the parent `bad` fails at run time
    config = write_ladder(tmp_path, write_sentiment_csv(tmp_path / "d.csv", 32), "tiny-random-gpt2", RUNGS,
                          task={"type": "classification"})
    return prepare(load_ladder(config))


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_rung_from_another_records_it_starts_from_it_and_ships_on_its_own(ladder):
    board = compare(ladder)
    status = {e["rung"]: e for e in board["rungs"]}
    assert {n: e["status"] for n, e in status.items()} == {
        "sft": "ok", "full_after_sft": "ok", "bad": "failed", "full_after_bad": "failed"}
    out = ladder.output
    parent_hash = read(out / "sft" / "run.json")["rung_sha256"]
    assert read(out / "full_after_sft" / "run.json")["from"] == {
        "rung": "sft", "rung_sha256": parent_hash, "dir": str(out / "sft")}
    provenance = read(out / "full_after_sft" / "metrics.json")["provenance"]
    assert (provenance["from_rung"], provenance["from_rung_sha256"]) == ("sft", parent_hash)
    assert "from_rung" not in read(out / "sft" / "metrics.json")["provenance"]
    # the failed parent's child fails with an error naming it; it never loaded a model
    assert status["full_after_bad"]["error"] == "starts from rung 'bad', which failed (RuntimeError: boom); fix and " \
        "re-run 'bad' first."
    assert status["full_after_bad"]["cost"] == {}
    # the child ships a whole model: it loads and predicts as recorded with the parent's folder gone
    shutil.rmtree(out / "sft")
    task, method, _ = load_run(out / "full_after_sft")
    recorded = [json.loads(line) for line in (out / "full_after_sft" / "predictions.jsonl").read_text().splitlines()]
    again = task.predict(method, ladder.data.test)
    assert [r["prediction"] for r in again] == [r["prediction"] for r in recorded]


def test_the_child_starts_from_the_parents_merged_weights(ladder):
    compare(ladder, only=["sft"])
    child = build_method(ladder.spec.rung("full_after_sft"), ladder.ctx)
    child.start_from(ladder.output / "sft", read(ladder.output / "sft" / "run.json"))
    child.setup()
    _, parent, _ = load_run(ladder.output / "sft")
    merged = parent.model.merge_and_unload().state_dict()
    started = child.model.state_dict()
    assert merged.keys() == started.keys()
    assert all(torch.equal(merged[k].float(), started[k].float()) for k in merged)
    base = build_method(ladder.spec.rung("full_after_bad"), ladder.ctx)  # lm_full from the base model
    base.setup()
    assert not all(torch.equal(v, started[k]) for k, v in base.model.state_dict().items())


def test_changing_the_parent_changes_the_childs_hash_and_invalidates_it(ladder, tmp_path):
    compare(ladder, only=["sft", "full_after_sft"])
    assert finished_entry(ladder, ladder.spec.rung("full_after_sft")) is not None
    raw = yaml.safe_load((tmp_path / "ladder.yaml").read_text())
    raw["rungs"][0]["params"] = {**FAST, "r": 4}
    changed = dataclasses.replace(ladder, spec=parse_ladder(raw, base_dir=tmp_path))
    for name, differs in (("sft", True), ("full_after_sft", True), ("bad", False), ("full_after_bad", False)):
        before, after = rung_hash(ladder, ladder.spec.rung(name)), rung_hash(changed, changed.spec.rung(name))
        assert (before != after) is differs, name
    assert finished_entry(changed, changed.spec.rung("full_after_sft")) is None  # --resume re-runs the child


def test_a_child_whose_parent_never_ran_fails_cleanly(ladder):
    board = compare(ladder, only=["full_after_sft"])
    (entry,) = board["rungs"]
    out = ladder.output
    assert entry["status"] == "failed"
    assert entry["error"] == f"starts from rung 'sft', which has no finished output in {out / 'sft'}; run it " \
        "first (adaptlab compare CONFIG --rungs sft,full_after_sft)."
    assert (out / "full_after_sft" / "error.log").is_file()


def test_metrics_json_written_by_the_pipeline_round_trips(ladder):
    board = compare(ladder, only=["sft"])
    written = read(ladder.output / "sft" / "metrics.json")
    result = RungResult.model_validate(written)
    assert {"per_class", "confusion_matrix", "forgetting"} <= set(result.details)
    assert "per_class" in written  # the task's keys stay at the top level of the file
    dumped = json.loads(json.dumps(result.model_dump()))
    assert dumped == written and list(dumped) == list(written)
    assert board["rungs"] == [result.entry()]
