"""Encoder rungs with adaptlab's own heads (cls / mean pooling): bundles, merged and ONNX exports reproduce the run,
and the server answers such an adapter next to a pooler-head one on the same base exactly as the run did."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.conftest import write_config, write_sentiment_csv
from tests.e2e.test_cli import run_cli
from tests.e2e.test_export import recorded

import adaptlab

FAST = {"learning_rate": 5e-3, "batch_size": 16, "max_steps": 4, "evals_per_epoch": 0}


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, tiny_bert):
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    root = tmp_path_factory.mktemp("heads")
    data = write_sentiment_csv(root / "sentiment.csv", 120)
    rungs = [{"method": "lora", "name": "lora_mean", "params": {**FAST, "head": "mean"}},
             {"method": "lora", "name": "lora_pooler", "params": {**FAST, "head": "pooler"}},
             {"method": "full", "name": "full_cls", "params": {**FAST, "head": "cls"}}]
    board = compare(prepare(load_ladder(write_config(root, data, tiny_bert, rungs))))
    assert [e["status"] for e in board["rungs"]] == ["ok", "ok", "ok"], board
    return root / "out"


@pytest.mark.parametrize("rung", ["lora_mean", "full_cls"])
def test_bundle_of_a_pooled_head_reproduces_the_run(rung, ladder, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "export", ladder / rung, "--to", tmp_path / "b")
    assert code == 0, err
    texts, probs, _ = recorded(ladder / rung)
    assert np.max(np.abs(adaptlab.load(tmp_path / "b").predict_proba(texts) - probs)) < 1e-5


def test_merge_and_onnx_of_a_pooled_head_pass_parity(ladder, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "export", ladder / "lora_mean", "--to", tmp_path / "m", "--merge",
                           "--onnx")
    assert code == 0, err
    report = json.loads((tmp_path / "m" / "parity.json").read_text())
    assert [c["artifact"] for c in report["checks"]] == ["weights", "merged", "onnx"] and report["passed"]
    texts, probs, _ = recorded(ladder / "lora_mean")
    for backend in ("merged", "onnx"):
        got = adaptlab.load(tmp_path / "m", backend=backend).predict_proba(texts)
        assert np.max(np.abs(got - probs)) < 1e-4, backend


def test_server_answers_a_pooled_head_adapter_next_to_a_pooler_one_as_the_run_did(ladder):
    from adaptlab.serving.adapters import resolve_adapter
    from adaptlab.serving.engine import ClassifyItem
    from adaptlab.serving.transformers_engine import TransformersEngine

    engine = TransformersEngine("tiny-random-bert", device="cpu")
    engine.load_adapter(resolve_adapter("pooler", ladder / "lora_pooler"))
    engine.load_adapter(resolve_adapter("mean", ladder / "lora_mean"))
    for name, rung in (("mean", "lora_mean"), ("pooler", "lora_pooler"), ("mean", "lora_mean")):
        texts, probs, labels = recorded(ladder / rung)
        got = engine.classify(name, [ClassifyItem(text=t) for t in texts])
        served = np.array([[g.scores[n] for n in labels] for g in got])
        assert np.max(np.abs(served - probs)) < 1e-4, name
