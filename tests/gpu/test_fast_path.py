"""On a CUDA device (``pytest -m gpu``): the fast path is what a rung gets without asking, trains to the plain
path's losses, QLoRA runs and ships, and the planner's CUDA prediction holds. Skipped where there is no GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.generative_data import write_ladder, write_sentiment_csv

from adaptlab.config import load_ladder
from adaptlab.pipeline import compare, prepare

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

FAST = {"max_steps": 20, "batch_size": 8, "learning_rate": 1e-3, "evals_per_epoch": 0, "logging_steps": 1}


def _ladder(tmp_path: Path, rungs: list[dict]):
    """Classification (its metrics need only scikit-learn, which the GPU machine has) on tiny random Llama."""
    data = write_sentiment_csv(tmp_path / "d.csv", 48)
    config = write_ladder(tmp_path, data, "tiny-random-llama", rungs, task={"type": "classification"})
    return prepare(load_ladder(config))


def _metrics(ladder, name: str) -> dict:
    return json.loads((ladder.output / name / "metrics.json").read_text())


def test_auto_runtime_is_the_fast_path_and_trains_like_the_plain_one(tmp_path):
    plain = {"precision": "fp32", "compile": False, "packing": False, "liger": False, "optimizer": "adamw"}
    ladder = _ladder(tmp_path, [{"method": "lm_lora", "name": "fast", "params": FAST},
                                {"method": "lm_lora", "name": "plain", "params": FAST, "runtime": plain}])
    assert [e["status"] for e in compare(ladder)["rungs"]] == ["ok", "ok"]
    used = _metrics(ladder, "fast")["training"]["runtime"]
    assert used["precision"] in ("bf16", "fp16") and used["compile"] and used["packing"]
    assert used["optimizer"] == "adamw_fused"
    losses = {n: [h["loss"] for h in _metrics(ladder, n)["history"] if "loss" in h] for n in ("fast", "plain")}
    drift = sum(abs(a - b) / a for a, b in zip(losses["plain"], losses["fast"])) / len(losses["plain"])
    assert drift < 0.02, (drift, losses)
    assert _metrics(ladder, "fast")["cost"]["peak_memory_mb"] > 0


def test_qlora_on_cuda_counts_like_lora_and_holds_less(tmp_path):
    ladder = _ladder(tmp_path, [{"method": "lm_lora", "params": FAST}, {"method": "qlora", "params": FAST}])
    assert [e["status"] for e in compare(ladder)["rungs"]] == ["ok", "ok"]
    lora, qlora = (_metrics(ladder, n)["cost"] for n in ("lm_lora", "qlora"))
    assert qlora["total_params"] == lora["total_params"] and qlora["trainable_params"] == lora["trainable_params"]
    from adaptlab.pipeline import load_run

    _, method, _ = load_run(ladder.output / "qlora")
    assert str(next(method.model.parameters()).device).startswith("cuda")  # placed while loading, not moved


def test_planner_predicts_the_cuda_peak_within_a_quarter(tmp_path):
    from adaptlab.planning import plan

    ladder = _ladder(tmp_path, [{"method": "lm_lora", "params": {**FAST, "batch_size": 32}},
                                {"method": "lm_full", "params": {**FAST, "batch_size": 32}}])
    predicted = {r["rung"]: r["peak_mb"] for r in plan(ladder)["rungs"]}
    compare(ladder)
    for name, peak in predicted.items():
        measured = _metrics(ladder, name)["cost"]["peak_memory_mb"]
        assert abs(peak - measured) <= 0.25 * measured, (name, peak, measured)


def test_bench_smoke_runs_on_cuda(tmp_path):
    out = tmp_path / "bench.json"
    bench = Path(__file__).resolve().parents[2] / "bench" / "train_gpu.py"
    done = subprocess.run([sys.executable, str(bench), "--smoke", "--steps", "8", "--out", str(out)],
                          capture_output=True, text=True)
    assert out.is_file(), done.stderr[-3000:]
    assert set(json.loads(out.read_text())["results"]) == {"lora/plain", "lora/adaptlab", "full/plain",
                                                           "full/adaptlab"}
