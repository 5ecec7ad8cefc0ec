"""The planner's memory model and its advice, on shapes read from real configs; `adaptlab plan` on a tiny ladder."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from adaptlab.errors import UserError
from adaptlab.methods.base import Footprint, backprop_share
from adaptlab.planning import MB, Advice, Shape, activations_mb, memory, parse_size, suggest
from adaptlab.runtime import Runtime

PLAIN = Runtime("cpu")
LLM = Shape(layers=30, hidden=576, intermediate=1536, heads=9, vocab=49152, attention_dropout=False)
ENCODER = Shape(layers=6, hidden=384, intermediate=1536, heads=12, vocab=30522, attention_dropout=True)


def test_shapes_are_read_from_every_tiny_architecture(session_home):
    from adaptlab.generation import lm
    from adaptlab.models import resolve_model

    for arch in ("bert", "gpt2", "llama", "t5"):
        shape = Shape.of(lm.load_config(resolve_model(f"tiny-random-{arch}")))
        assert shape.layers > 0 and shape.hidden > 0 and shape.intermediate > 0 and shape.vocab > 0, (arch, shape)


def test_activations_scale_with_the_batch_and_what_backpropagates():
    lora = Footprint(weight_bytes=0, train_batch=16, backprop_layers=1.0, eval_batch=128, tokens=64)
    train, score = activations_mb(lora, ENCODER, 4, checkpointing=False)
    double, _ = activations_mb(replace(lora, train_batch=32), ENCODER, 4, checkpointing=False)
    assert double == pytest.approx(2 * train) and train > 0 and score > 0
    half_layers, _ = activations_mb(replace(lora, backprop_layers=0.5), ENCODER, 4, checkpointing=False)
    assert half_layers == pytest.approx(train / 2)
    assert activations_mb(replace(lora, backprop_layers=0.0), ENCODER, 4, checkpointing=False)[0] == 0
    checkpointed, _ = activations_mb(lora, ENCODER, 4, checkpointing=True)
    assert checkpointed < train / 3
    assert activations_mb(lora, ENCODER, 2, checkpointing=False)[0] == pytest.approx(train / 2)


def test_language_models_pay_for_their_vocabulary_logits():
    fp = Footprint(weight_bytes=0, train_batch=8, backprop_layers=1.0, eval_batch=16, tokens=128)
    without, _ = activations_mb(fp, LLM, 4, checkpointing=False)
    with_logits, score = activations_mb(replace(fp, vocab_logits=True), LLM, 4, checkpointing=False)
    assert with_logits - without == pytest.approx(3 * 8 * 128 * 49152 * 4 / MB)
    assert score > 2 * 16 * 128 * 49152 * 4 / MB


def test_gradients_and_adam_states_follow_the_trainable_parameters():
    fp = Footprint(weight_bytes=100 * MB, train_batch=16, backprop_layers=1.0, eval_batch=16, tokens=64)
    parts = memory(fp, ENCODER, trainable=MB, baseline_mb=500, runtime=PLAIN)
    assert (parts["weights_mb"], parts["gradients_mb"], parts["optimizer_mb"]) == (100, 4, 8)
    assert parts["peak_mb"] == pytest.approx(500 + 100 + 4 + 8 + parts["activations_mb"])
    assert memory(fp, ENCODER, MB, 500, replace(PLAIN, optimizer="adamw_8bit"))["optimizer_mb"] == 2
    scoring_only = memory(replace(fp, train_batch=0), ENCODER, trainable=0, baseline_mb=500, runtime=PLAIN)
    assert scoring_only["gradients_mb"] == scoring_only["optimizer_mb"] == 0


def test_validating_while_training_scores_on_top_of_the_training_state_and_keeps_the_best_weights():
    fp = Footprint(weight_bytes=0, train_batch=16, backprop_layers=1.0, eval_batch=128, tokens=64)
    wide = replace(fp, eval_batch=1024)  # scoring is the larger phase
    train, score = activations_mb(wide, ENCODER, 4, checkpointing=False)
    assert score > train
    alone = memory(wide, ENCODER, trainable=MB, baseline_mb=0, runtime=PLAIN)
    during = memory(wide, ENCODER, trainable=MB, baseline_mb=0, runtime=PLAIN, validates=True)
    assert alone["peak_mb"] == pytest.approx(score)  # after training: the trainer and its state are gone
    assert during["peak_mb"] == pytest.approx(4 + 8 + 4 + score)  # gradients, Adam, the best copy, a scoring batch
    measured = memory(fp, ENCODER, trainable=0, baseline_mb=0, runtime=PLAIN, per_token=(1000.0, 10.0))
    assert measured["activations_mb"] == pytest.approx(1000.0 * 16 * 64 / MB)


def test_backprop_share_reads_what_trains_from_parameter_names():
    top = ["encoder.layer.4.attention.q.lora_A.weight", "classifier.weight"]
    assert backprop_share(top, 6) == pytest.approx(2 / 6)
    assert backprop_share(["model.layers.0.self_attn.q_proj.lora_A.default.weight"], 30) == 1.0
    assert backprop_share(["classifier.weight", "classifier.bias", "pooler.dense.weight"], 6) == 0.0
    assert backprop_share(["prompt_encoder.default.embedding.weight"], 6) == 1.0  # before the layers
    assert backprop_share([], 6) == 0.0


def test_advice_is_the_first_change_that_fits():
    fp = Footprint(weight_bytes=270 * MB, train_batch=32, backprop_layers=1.0, eval_batch=16, tokens=512,
                   vocab_logits=True)
    peak = memory(fp, LLM, 2_000_000, 0, PLAIN)["peak_mb"]
    checkpointed = memory(fp, LLM, 2_000_000, 0, replace(PLAIN, gradient_checkpointing=True))["peak_mb"]
    assert checkpointed < peak
    between = (peak + checkpointed) / 2
    assert suggest(fp, LLM, 2_000_000, 0, PLAIN, between, Advice(checkpointable=True)) == \
        "runtime: {gradient_checkpointing: true}"
    advice = suggest(fp, LLM, 2_000_000, 0, PLAIN, between, Advice(accumulation=3))
    assert advice.startswith("params: {batch_size: 16, gradient_accumulation_steps: 6}")  # same examples per step
    assert suggest(fp, LLM, 2_000_000, 0, PLAIN, 1.0, Advice(checkpointable=True, four_bit="qlora")) is None
    weights_bound = replace(fp, weight_bytes=4000 * MB, train_batch=1)
    tight = memory(weights_bound, LLM, 2_000_000, 0, PLAIN)["peak_mb"] - 2000
    assert suggest(weights_bound, LLM, 2_000_000, 0, PLAIN, tight, Advice(four_bit="qlora")) == \
        "method: qlora (a 4-bit base)"
    assert suggest(weights_bound, LLM, 2_000_000, 0, PLAIN, tight, Advice()) is None


def test_sizes():
    assert parse_size("24GiB") == 24 * 1024 and parse_size("800MB") == 800 and parse_size("16g") == 16 * 1024
    assert parse_size("512") == 512
    for bad in ("lots", "nan", "inf", "0", "-1G"):
        with pytest.raises(UserError, match="24GiB"):
            parse_size(bad)


def test_plan_command_on_a_tiny_ladder(tmp_path, monkeypatch, capsys, session_home):
    from tests.e2e.test_cli import run_cli
    from tests.generative_data import write_ladder, write_sentiment_csv

    data = write_sentiment_csv(tmp_path / "d.csv", 32)
    rungs = [{"method": "zero_shot_prompt"},
             {"method": "lm_lora", "params": {"max_steps": 2, "batch_size": 100_000, "evals_per_epoch": 0}}]
    config = write_ladder(tmp_path, data, "tiny-random-llama", rungs, task={"type": "classification"})
    code, out, err = run_cli(monkeypatch, capsys, "plan", config, "--json")
    assert code == 0, err
    plan = json.loads(out)
    zero, lora = plan["rungs"]
    assert (zero["trainable"], zero["gradients_mb"], zero["steps"]) == (0, 0, None)
    assert lora["trainable"] > 0 and lora["steps"] == 2 and lora["train_seconds"] > 0 and lora["fits"]
    assert lora["batch"] == 24  # batch_size 100000 trains on the 24 training examples there are
    assert lora["peak_mb"] > lora["baseline_mb"] > 100  # a Python process with torch loaded
    assert not (tmp_path / "out").exists()  # planning writes no runs
    code, out, err = run_cli(monkeypatch, capsys, "plan", config, "--memory", "10MiB")
    assert code == 0, err
    assert "does not fit" in out and "no change found that fits" in out
    code, out, err = run_cli(monkeypatch, capsys, "plan", config, "--device", "cuda", "--gpu-memory", "24GiB",
                             "--json")
    assert code == 0, err
    gpu = json.loads(out)
    assert gpu["memory_mb"] == 24 * 1024 and gpu["rungs"][1]["baseline_mb"] == 0
    assert gpu["rungs"][1]["seconds"] is None and any("not calibrated" in n for n in gpu["rungs"][1]["notes"])
    for args, message in ((["--device", "mps"], "use cpu, cuda or cuda:N"), (["--memory", "-1G"], "positive size"),
                          (["--rungs", "lorra"], "no rung named 'lorra'")):
        code, out, err = run_cli(monkeypatch, capsys, "plan", config, *args)
        assert code != 0 and message in out + err, (args, out, err)


def test_predicted_seconds_keep_three_significant_figures():
    from adaptlab.planning import significant
    from adaptlab.planning_commands import _seconds

    assert significant(0.04127) == 0.0413 and significant(1234.5) == 1230.0 and significant(0.0) == 0.0
    assert (_seconds(0.04127), _seconds(3.46), _seconds(1234.5), _seconds(None)) == ("0.041", "3.5", "1234", "-")
