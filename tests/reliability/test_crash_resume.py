"""Crashes, resume, locks and reproducibility (issue 5).

A training process is killed with SIGKILL at random moments (and once in the middle of writing a checkpoint),
then resumed until it finishes: predictions and metrics must equal those of an uninterrupted run with the same seed,
and the run registry must stay consistent.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import write_config

TRAIN = {"method": "full", "params": {"max_steps": 80, "batch_size": 8, "learning_rate": 1e-3,
                                       "checkpoint_every_steps": 5, "evals_per_epoch": 0, "logging_steps": 5}}


def adaptlab(*args, env=None, **kw) -> subprocess.Popen:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "adaptlab", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, **kw)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def results(folder: Path) -> tuple[list[dict], dict]:
    preds = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    metrics = json.loads((folder / "metrics.json").read_text())
    return preds, metrics["metrics"]


def newest_checkpoint(folder: Path) -> int:
    steps = [int(p.name.rsplit("-", 1)[1]) for p in folder.glob("checkpoint-*")] if folder.is_dir() else []
    return max(steps, default=0)


def registry_rows(home: Path) -> list[tuple]:
    con = sqlite3.connect(home / "runs.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = con.execute("SELECT path, rung, status FROM runs").fetchall()
    con.close()
    return rows


@pytest.fixture
def crash_config(tmp_path, sentiment_csv, tiny_bert):
    return write_config(tmp_path, sentiment_csv, tiny_bert, [TRAIN])


def test_sigkill_at_random_points_then_resume_equals_uninterrupted(crash_config, tmp_path, _home):
    # The uninterrupted reference, in its own output folder.
    code, _, err = finish(adaptlab("run", crash_config, "--rung", "full", "-o", tmp_path / "reference"))
    assert code == 0, err
    reference = results(tmp_path / "reference" / "full")

    out = tmp_path / "crashy"
    rng = random.Random(1234)
    kills = 0
    # 1) killed while checkpoint 10 is half written: the half checkpoint must not be trusted on resume.
    code, _, _ = finish(adaptlab("run", crash_config, "--rung", "full", "-o", out,
                                 env={"ADAPTLAB_FAULT": "checkpoint:10"}))
    assert code == -signal.SIGKILL
    kills += 1
    staged = out / ".partial" / "full" / "checkpoints"
    assert not (staged / "checkpoint-10").exists(), "a half-written checkpoint looks complete"
    assert (staged / "checkpoint-5" / "trainer_state.json").is_file()
    assert not (out / "full").exists(), "an interrupted rung must not look finished"
    # 2) killed at random moments of training, each time resuming: wait for training to progress past the last
    #    checkpoint, then kill after a random delay (which may land inside the next checkpoint's write).
    for _ in range(2):
        seen = newest_checkpoint(staged)  # what this process resumes from
        proc = adaptlab("run", crash_config, "--rung", "full", "-o", out, "--resume")
        deadline = time.monotonic() + 120
        while proc.poll() is None and newest_checkpoint(staged) <= seen and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        if (out / "full" / "metrics.json").is_file():
            break
    # 3) resume to the end.
    if not (out / "full" / "metrics.json").is_file():
        seen = newest_checkpoint(staged)
        code, _, err = finish(adaptlab("run", crash_config, "--rung", "full", "-o", out, "--resume"))
        assert code == 0, err
    assert kills == 3
    resumed = results(out / "full")
    assert resumed[1] == reference[1]
    assert [p["scores"] for p in resumed[0]] == [p["scores"] for p in reference[0]]
    # the run that finished resumed from the newest complete checkpoint there was when it started (checkpoint-5
    # at least: the half-written checkpoint-10 of step 1 never counts)
    assert seen >= 5
    assert json.loads((out / "full" / "metrics.json").read_text())["resumed_from"] == f"checkpoint-{seen}"
    rows = registry_rows(_home)
    paths = [r[0] for r in rows]
    assert len(paths) == len(set(paths)) == 2  # reference + crashy, no duplicates or orphans
    assert all(Path(p).is_dir() for p in paths)


def test_resume_after_turning_on_gradient_checkpointing_continues_other_changes_restart(
        tmp_path, sentiment_csv, tiny_bert):
    """The run out of memory: turn on gradient checkpointing and --resume, and it continues from its last
    checkpoint (recomputing activations changes memory and time, not the numbers); a setting that changes the
    training (the learning rate) gives the staged checkpoints another hash, so the rung would start again."""
    import yaml

    from adaptlab.config import load_ladder
    from adaptlab.pipeline import prepare, rung_hash

    config = write_config(tmp_path, sentiment_csv, tiny_bert, [{**TRAIN, "params": {**TRAIN["params"],
                                                                                     "max_steps": 12}}])
    out = tmp_path / "out"
    code, _, _ = finish(adaptlab("run", config, "--rung", "full", "-o", out, env={"ADAPTLAB_FAULT": "checkpoint:10"}))
    assert code == -signal.SIGKILL
    original = yaml.safe_load(config.read_text())
    variants = {}
    for name, change in (("checkpointing", {"runtime": {"gradient_checkpointing": True}}),
                         ("learning_rate", {"params": {**original["rungs"][0]["params"], "learning_rate": 2e-3}})):
        cfg = {**original, "rungs": [{**original["rungs"][0], **change}]}
        variants[name] = tmp_path / f"{name}.yaml"
        variants[name].write_text(yaml.safe_dump(cfg))
    staged = json.loads((out / ".partial" / "full" / "run.json").read_text())["checkpoint_sha256"]
    hashes = {}
    for name, path in variants.items():
        ladder = prepare(load_ladder(path))
        hashes[name] = rung_hash(ladder, ladder.spec.rung("full"), checkpoint=True)
    assert hashes["checkpointing"] == staged != hashes["learning_rate"]
    code, _, err = finish(adaptlab("run", variants["checkpointing"], "--rung", "full", "-o", out, "--resume"))
    assert code == 0, err
    metrics = json.loads((out / "full" / "metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-5"
    assert metrics["training"]["runtime"]["gradient_checkpointing"] is True


def test_second_compare_on_same_output_refuses(crash_config, tmp_path):
    from adaptlab.runs.files import OutputLock

    with OutputLock(tmp_path / "out"):
        code, out, err = finish(adaptlab("compare", crash_config))
    assert code == 2
    assert "another adaptlab process" in err and "--output" in err


def test_same_seed_same_predictions_and_check_repro(tmp_path, sentiment_csv, tiny_bert):
    """A finished rung re-run in a new process (``--check-repro``) reproduces its predictions and metrics exactly;
    a record that differs (one prediction tampered with) is reported with exit code 1."""
    rungs = [{"method": "lora", "params": {"max_steps": 15, "batch_size": 8, "evals_per_epoch": 0}},
             {"method": "linear_probe"}]
    config = write_config(tmp_path, sentiment_csv, tiny_bert, rungs)
    code, _, err = finish(adaptlab("compare", config, "-o", tmp_path / "a"))
    assert code == 0, err
    code, out, err = finish(adaptlab("compare", config, "-o", tmp_path / "a", "--check-repro", "lora"))
    assert code == 0, err
    assert "reproduced" in out and "not reproduced" not in out
    rows = registry_rows(Path(os.environ["ADAPTLAB_HOME"]))  # the run's rungs, no row left by the re-run
    assert sorted(rung for _, rung, _ in rows) == ["linear_probe", "lora"]
    assert all(Path(path).is_dir() for path, _, _ in rows)
    preds = tmp_path / "a" / "linear_probe" / "predictions.jsonl"
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    rows[0]["prediction"] = "tampered"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = finish(adaptlab("compare", config, "-o", tmp_path / "a", "--check-repro", "linear_probe"))
    assert code == 1, (out, err)
    assert "not reproduced" in out and "predictions differ on 1 of" in out


def test_nan_loss_stops_the_rung_with_step_and_advice(tmp_path, sentiment_csv, tiny_bert, monkeypatch):
    import torch
    from transformers import BertForSequenceClassification

    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    original = BertForSequenceClassification.forward

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)  # NaN logits: whichever loss is computed from them is NaN
        out.logits = out.logits * torch.tensor(float("nan"))
        if out.loss is not None:
            out.loss = out.loss * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(BertForSequenceClassification, "forward", poisoned)
    # head: pooler, so the poisoned transformers classifier is the model that trains
    rungs = [{"method": "head_only", "params": {"max_steps": 5, "logging_steps": 1, "head": "pooler"}},
             {"method": "linear_probe"}]
    board = compare(prepare(load_ladder(write_config(tmp_path, sentiment_csv, tiny_bert, rungs))))
    status = {e["rung"]: e for e in board["rungs"]}
    assert status["linear_probe"]["status"] == "ok"
    failed = status["head_only"]
    assert failed["status"] == "failed"
    assert "nan" in failed["error"] and "step 1" in failed["error"] and "learning_rate" in failed["error"]
    assert (tmp_path / "out" / "head_only" / "error.log").is_file()
