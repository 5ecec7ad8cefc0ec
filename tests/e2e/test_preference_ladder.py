"""The preference ladder end to end on a tiny random Llama: a floor, DPO (LoRA, and every weight), ORPO, a reward
model, an SFT rung and DPO starting from it, on a separable set (every chosen response carries a marker word). Each
trained rung beats the floor on held-out pairs; every rung reloads from its folder to the very scores it recorded;
DPO from the SFT rung starts from (and is referenced against) that rung's model and ships without it. The shipped
chitchat_dpo example runs through the same pipeline with the tiny model in place of SmolLM2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.generative_data import one_torch_thread  # noqa: F401  (autouse)
from tests.preference_data import preference_rows, write_rows

from adaptlab.config import load_ladder
from adaptlab.methods._pairs import encode_pairs, pair_logprobs
from adaptlab.pipeline import compare, load_run, prepare

FAST = {"max_steps": 8, "batch_size": 8, "learning_rate": 5e-3, "evals_per_epoch": 0, "logging_steps": 1}
RUNGS = [
    {"method": "base_preference", "name": "floor"},
    {"method": "dpo", "params": FAST},
    {"method": "dpo", "name": "dpo_full", "params": {**FAST, "lora": False, "learning_rate": 1e-3}},
    {"method": "orpo", "params": FAST},
    {"method": "reward_model", "params": FAST},
    {"method": "lm_lora", "name": "sft", "params": FAST},
    {"method": "dpo", "name": "dpo_from_sft", "from": "sft", "params": FAST},
]
TRAINED = ("dpo", "dpo_full", "orpo", "reward_model", "dpo_from_sft")


def _write_config(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preference")
    data = write_rows(tmp / "pairs.jsonl", preference_rows(80))
    cfg = {"name": "pref", "task": {"type": "preference", "forgetting_tokens": 64},
           "data": {"path": str(data), "test_size": 0.25, "validation_size": 0.0, "max_length": 64},
           "model": "tiny-random-llama", "seed": 0, "output_dir": str(tmp / "out"), "rungs": RUNGS}
    ladder = prepare(load_ladder(_write_config(tmp, cfg)))
    return ladder, compare(ladder)


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def test_every_trained_rung_beats_the_floor_on_held_out_pairs(finished):
    ladder, board = finished
    entries = {e["rung"]: e for e in board["rungs"]}
    assert {n: e["status"] for n, e in entries.items()} == dict.fromkeys([r.get("name", r["method"]) for r in RUNGS],
                                                                         "ok")
    floor = entries["floor"]["value"]
    assert floor < 0.5  # the marker is a rare, long word: the untrained model finds it unlikely
    for name in TRAINED:
        assert entries[name]["value"] >= 0.9 > floor, (name, entries[name]["value"], floor)
    assert set(board["baselines"]) == {"longer_response_wins"}
    record = _records(ladder.output / "dpo")[0]
    assert set(record) == {"id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "margin",
                           "correct", "prediction"}
    metrics = json.loads((ladder.output / "dpo" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["primary_metric"] == "preference_accuracy" and metrics["cost"]["trainable_params"] > 0
    reward = json.loads((ladder.output / "reward_model" / "metrics.json").read_text(encoding="utf-8"))
    assert "forgetting" in metrics["metrics"] and "forgetting" not in reward["metrics"]  # a reward model writes none


@pytest.mark.parametrize("rung", ["floor", "sft", *TRAINED])
def test_a_reloaded_rung_gives_the_scores_it_recorded(finished, rung):
    ladder, _ = finished
    folder = ladder.output / rung
    assert not list((folder / "weights").rglob("*.bin")) and list((folder / "weights").rglob("*.safetensors")) \
        or rung == "floor"
    task, method, _ = load_run(folder)
    records = _records(folder)
    test = ladder.data.test
    chosen, rejected = method.score_pairs(test.prompts, test.chosen, test.rejected)
    assert [r["id"] for r in records] == test.ids
    np.testing.assert_allclose(chosen, [r["score_chosen"] for r in records], atol=2e-6)
    np.testing.assert_allclose(rejected, [r["score_rejected"] for r in records], atol=2e-6)


def test_dpo_from_the_sft_rung_starts_from_it_and_ships_without_it(finished, tmp_path):
    ladder, _ = finished
    out = ladder.output
    run = json.loads((out / "dpo_from_sft" / "run.json").read_text(encoding="utf-8"))
    assert run["from"]["rung"] == "sft" and (out / "dpo_from_sft" / "weights" / "parent.json").is_file()
    test = ladder.data.test
    _, sft, _ = load_run(out / "sft")
    pairs = encode_pairs(sft.formatter, test.prompts, test.chosen, test.rejected)
    sft_logp = pair_logprobs(sft, sft.model, pairs)[0]
    copy = shutil.copytree(out / "dpo_from_sft", tmp_path / "dpo_from_sft")  # the parent's folder is not needed
    _, dpo, _ = load_run(copy)
    with dpo.model.disable_adapter():  # its reference: the SFT model (the SFT adapter merged in)
        np.testing.assert_allclose(pair_logprobs(dpo, dpo.model, pairs)[0], sft_logp, rtol=1e-4, atol=1e-4)
    _, base, _ = load_run(out / "floor")
    assert not np.allclose(pair_logprobs(base, base.model, pairs)[0], sft_logp, atol=1e-3)  # SFT changed the start


def test_the_report_shows_accuracy_and_the_paired_test(finished, tmp_path):
    from adaptlab.reporting.report import write_report

    ladder, _ = finished
    written = write_report([ladder.output], tmp_path / "report", quiet=True)
    text = "\n".join(p.read_text(encoding="utf-8") for p in written if p.suffix == ".md")
    assert "Preference accuracy" in text and "Hardest pairs" in text and "McNemar" in text


def test_the_chitchat_dpo_example_runs_on_a_tiny_llama(tmp_path):
    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "chitchat_dpo.yaml").read_text())
    cfg.update(model="tiny-random-llama", output_dir=str(tmp_path / "out"))
    cfg["task"]["forgetting_tokens"] = 64
    cfg["data"].update(max_train_examples=24, max_test_examples=12, max_length=96)
    for rung in cfg["rungs"][1:]:  # every rung but the floor trains: two steps each
        rung["params"]["max_steps"] = 2
    ladder = prepare(load_ladder(_write_config(tmp_path, cfg)))
    assert ladder.data.meta()["format"] == "text" and len(ladder.data.test) == 12
    board = compare(ladder)
    assert {e["rung"]: e["status"] for e in board["rungs"]} == dict.fromkeys(
        ["base", "sft", "dpo_from_sft", "orpo", "reward"], "ok")
