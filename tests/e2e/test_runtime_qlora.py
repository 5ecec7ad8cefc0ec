"""Runtime options in a ladder on CPU (applied ones change training, the others are reported), and the qlora rung:
a 4-bit base under the adapter, parameters counted unpacked, merged export into the dequantised base with parity."""

from __future__ import annotations

import json
import logging

import pytest
from tests.e2e.test_cli import run_cli
from tests.generative_data import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    one_torch_thread,
    write_generation_csv,
    write_ladder,
    write_sentiment_csv,
)

from adaptlab.config import load_ladder
from adaptlab.pipeline import compare, prepare, rung_hash

FAST = {"max_steps": 3, "batch_size": 8, "learning_rate": 1e-2, "evals_per_epoch": 0, "logging_steps": 1}


def test_runtime_options_apply_on_cpu_or_are_reported(tmp_path, caplog):
    data = write_sentiment_csv(tmp_path / "d.csv", 32)
    asked = {"packing": True, "gradient_checkpointing": True, "precision": "bf16", "liger": True}
    rungs = [{"method": "lm_lora", "name": "plain", "params": FAST},
             {"method": "lm_lora", "name": "fast", "params": FAST, "runtime": asked},
             {"method": "zero_shot_prompt", "runtime": {"compile": True}}]
    ladder = prepare(load_ladder(write_ladder(tmp_path, data, "tiny-random-llama", rungs,
                                              task={"type": "classification"})))
    plain, fast = (ladder.spec.rung(n) for n in ("plain", "fast"))
    assert rung_hash(ladder, plain) != rung_hash(ladder, fast)
    with caplog.at_level(logging.WARNING):
        board = compare(ladder)
    assert [e["status"] for e in board["rungs"]] == ["ok"] * 3
    used = json.loads((ladder.output / "fast" / "metrics.json").read_text())["training"]["runtime"]
    assert (used["packing"], used["gradient_checkpointing"], used["precision"], used["liger"]) == \
        (True, True, "bf16", False)
    assert used["not_applied"] == ["liger=true not applied: Liger's kernels need CUDA (device cpu)"]
    default = json.loads((ladder.output / "plain" / "metrics.json").read_text())["training"]["runtime"]
    assert (default["packing"], default["precision"], default["not_applied"]) == (False, "fp32", [])
    assert "fast: runtime liger=true not applied" in caplog.text
    assert "zero_shot_prompt: runtime compile=true not applied: rung 'zero_shot_prompt' does not train" in caplog.text
    untrained = json.loads((ladder.output / "zero_shot_prompt" / "metrics.json").read_text())["training"]["runtime"]
    assert untrained["compile"] is False and len(untrained["not_applied"]) == 1
    losses = {n: [h["loss"] for h in json.loads((ladder.output / n / "metrics.json").read_text())["history"]
                  if "loss" in h] for n in ("plain", "fast")}
    assert abs(losses["plain"][0] - losses["fast"][0]) < 0.05 * losses["plain"][0]  # bf16 autocast, same batches


@pytest.fixture(scope="module")
def qlora_ladder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qlora")
    data = write_generation_csv(tmp / "d.csv", 24)
    rungs = [{"method": "lm_lora", "params": FAST}, {"method": "qlora", "params": FAST}]
    ladder = prepare(load_ladder(write_ladder(tmp, data, "tiny-random-llama", rungs)))
    board = compare(ladder)
    assert [e["status"] for e in board["rungs"]] == ["ok", "ok"]
    return ladder


def test_qlora_trains_over_a_4bit_base_counted_unpacked(qlora_ladder):
    import bitsandbytes as bnb

    from adaptlab.pipeline import load_run

    costs = {n: json.loads((qlora_ladder.output / n / "metrics.json").read_text())["cost"]
             for n in ("lm_lora", "qlora")}
    assert costs["qlora"]["total_params"] == costs["lm_lora"]["total_params"]
    assert costs["qlora"]["trainable_params"] == costs["lm_lora"]["trainable_params"] > 0
    _, method, _ = load_run(qlora_ladder.output / "qlora")
    layers = [m for m in method.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and layers[0].weight.quant_state.quant_type == "nf4"
    packed = sum(p.numel() for p in method.model.parameters())
    assert packed < costs["qlora"]["total_params"]  # what numel() alone would have reported


def test_a_qlora_adapter_is_not_served_on_the_full_precision_base(qlora_ladder):
    from adaptlab.errors import UserError
    from adaptlab.serving.adapters import resolve_adapter

    assert resolve_adapter("plain", qlora_ladder.output / "lm_lora").kind == "peft"
    with pytest.raises(UserError, match="serve it merged as the base"):
        resolve_adapter("four_bit", qlora_ladder.output / "qlora")


def test_qlora_merged_export_is_a_plain_dequantised_model_with_parity(qlora_ladder, tmp_path, monkeypatch, capsys):
    from transformers import AutoConfig

    bundle = tmp_path / "bundle"
    code, out, err = run_cli(monkeypatch, capsys, "export", qlora_ladder.output / "qlora", "--to", bundle, "--merge")
    assert code == 0, err
    checks = {c["artifact"]: c for c in json.loads((bundle / "parity.json").read_text())["checks"]}
    assert checks["merged"]["passed"] and checks["merged"]["tolerance"]["logit"] is None  # QUANTIZED_TOLERANCE
    assert checks["merged"]["max_abs_logit_diff"] < 0.05
    config = AutoConfig.from_pretrained(bundle / "merged")
    assert getattr(config, "quantization_config", None) is None


def test_gradient_checkpointing_on_an_encoder_rung_recomputes_the_same_losses(tmp_path, tiny_bert):
    """The mean-pooling head wraps the encoder: checkpointing must reach the body, and recomputing changes nothing."""
    from tests.conftest import write_config
    from tests.conftest import write_sentiment_csv as write_csv

    data = write_csv(tmp_path / "s.csv", 64)
    params = {"max_steps": 4, "batch_size": 8, "learning_rate": 1e-3, "evals_per_epoch": 0, "logging_steps": 1}
    rungs = [{"method": "lora", "name": "plain", "params": params},
             {"method": "lora", "name": "checkpointed", "params": params,
              "runtime": {"gradient_checkpointing": True}}]
    ladder = prepare(load_ladder(write_config(tmp_path, data, tiny_bert, rungs)))
    assert [e["status"] for e in compare(ladder)["rungs"]] == ["ok", "ok"]
    runs = {n: json.loads((ladder.output / n / "metrics.json").read_text()) for n in ("plain", "checkpointed")}
    assert runs["checkpointed"]["training"]["runtime"]["gradient_checkpointing"] is True
    losses = {n: [h["loss"] for h in r["history"] if "loss" in h] for n, r in runs.items()}
    assert len(losses["plain"]) == 4 and losses["plain"] == pytest.approx(losses["checkpointed"], rel=1e-5)
