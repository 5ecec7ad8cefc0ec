"""A ladder whose trained rungs evaluate the validation split with the task's metric, keep the best weights, and say
so in metrics.json, run.json and the report (issue "A fair ladder": best checkpoint by the task's metric)."""

from __future__ import annotations

import json

from tests.conftest import write_config
from tests.generative_data import one_torch_thread, write_generation_csv, write_ladder  # noqa: F401  (autouse)

from adaptlab.config import load_ladder
from adaptlab.pipeline import compare, prepare
from adaptlab.reporting.report import write_report

LORA = {"method": "lora", "params": {"learning_rate": 5e-3, "batch_size": 16, "epochs": 3, "evals_per_epoch": 2,
                                     "early_stopping_patience": 50}}


def _read(folder, name: str) -> dict:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def test_metrics_json_and_report_show_the_weights_kept(tmp_path, sentiment_csv, tiny_bert):
    config = write_config(tmp_path, sentiment_csv, tiny_bert, [LORA, {"method": "linear_probe"}])
    board = compare(prepare(load_ladder(config)))
    assert [e["status"] for e in board["rungs"]] == ["ok", "ok"], [e["error"] for e in board["rungs"]]
    out = tmp_path / "out"
    metrics = _read(out / "lora", "metrics.json")
    selection = metrics["training"]["selection"]
    assert selection == _read(out / "lora", "run.json")["training"]["selection"]
    assert (selection["by"], selection["metric"], selection["patience"]) == ("metric", "macro_f1", 50)
    curve = [(h["step"], h["eval_macro_f1"]) for h in metrics["history"] if "eval_macro_f1" in h]
    steps_per_epoch = metrics["training"]["schedule"]["steps_per_epoch"]  # 156 examples / 16: 10
    assert [s for s, _ in curve] == [5 * k for k in range(1, 2 * 3 + 1)] and steps_per_epoch == 10
    assert selection["evaluations"] == len(curve) and selection["stopped_early_at"] is None
    best = max(v for _, v in curve)
    assert selection["best_value"] == best
    assert selection["best_step"] == max(s for s, v in curve if v == best) == selection["kept_step"]  # later tie
    assert all(0.0 <= v <= 1.0 for _, v in curve)
    assert "selection" not in _read(out / "linear_probe", "metrics.json").get("training", {})

    markdown, page = (p.read_text(encoding="utf-8") for p in write_report([out], out, quiet=True))
    line = (f"- `lora`: kept step {selection['kept_step']} of 30, the best validation macro_f1 "
            f"({best:.4f}) over {len(curve)} evaluations.")
    assert line in markdown
    assert "`linear_probe`: kept" not in markdown
    assert 'id="validation-curves"' in page and "validation macro_f1" in page
    assert f"kept step {selection['kept_step']} of 30" in page


def test_generative_rung_selects_by_rouge_and_reports_only_the_test_prompts(tmp_path):
    data = write_generation_csv(tmp_path / "gen.csv", 48)
    rung = {"method": "lm_lora", "params": {"max_steps": 6, "batch_size": 8, "evals_per_epoch": 2,
                                            "learning_rate": 1e-2, "logging_steps": 2}}
    config = write_ladder(tmp_path, data, "tiny-random-llama", [rung], validation_size=0.2)
    board = compare(prepare(load_ladder(config)))
    assert board["rungs"][0]["status"] == "ok", board["rungs"][0]["error"]
    folder = tmp_path / "out" / "lm_lora"
    metrics = _read(folder, "metrics.json")
    selection = metrics["training"]["selection"]
    assert (selection["by"], selection["metric"]) == ("metric", "rougeL") and selection["evaluations"] >= 2
    curve = [h["eval_rougeL"] for h in metrics["history"] if "eval_rougeL" in h]
    assert len(curve) == selection["evaluations"] and selection["best_value"] == max(curve)
    # the validation predictions made while training are not counted as the rung's prompts
    tests = {json.loads(line)["prompt"] for line in (folder / "predictions.jsonl").read_text().splitlines()}
    assert metrics["metrics"]["prompt"]["inputs"] == len(tests)
