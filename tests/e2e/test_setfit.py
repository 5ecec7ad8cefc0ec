"""The setfit rung learns from few examples per class and ships safetensors only (its contract with every other
classification rung is in tests/contract/test_methods.py)."""

from __future__ import annotations

import json

import numpy as np
from tests.conftest import write_config, write_sentiment_csv
from tests.generative_data import one_torch_thread  # noqa: F401 (autouse)

from adaptlab.config import load_ladder
from adaptlab.pipeline import load_run, prepare, run_rung


def test_setfit_learns_above_chance_from_about_20_examples_per_class(tmp_path, tiny_bert):
    # a random body needs a larger step than a pretrained one (setfit default 2e-5) to move visibly
    rungs = [{"method": "setfit", "params": {"num_iterations": 10, "body_learning_rate": 1e-3}}]
    data = write_sentiment_csv(tmp_path / "d.csv", 64)
    ladder = prepare(load_ladder(write_config(tmp_path, data, tiny_bert, rungs)))
    assert 16 <= min(np.bincount(ladder.data.train.labels)) <= 24
    entry = run_rung(ladder, ladder.spec.rung("setfit"), record=False)
    assert entry["status"] == "ok", entry["error"]
    majority = ladder.task.baselines(ladder.data, ladder.spec.seed)["majority_class"]["value"]
    assert entry["value"] >= 0.75 > majority, (entry["value"], majority)
    weights = ladder.output / "setfit" / "weights"
    files = {p.suffix for p in weights.rglob("*") if p.is_file()}
    assert ".safetensors" in files and not files & {".pkl", ".joblib", ".bin", ".pt", ".pth"}, files
    history = json.loads((ladder.output / "setfit" / "metrics.json").read_text())["history"]
    losses = [h["loss"] for h in history]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses  # the body's contrastive loss went down
    assert entry["cost"]["trainable_params"] == entry["cost"]["total_params"] > 0
    _, method, _ = load_run(ladder.output / "setfit")  # rebuilt from safetensors alone
    recorded = [json.loads(line)["prediction"] for line in
                (ladder.output / "setfit" / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in ladder.task.predict(method, ladder.data.test)] == recorded
