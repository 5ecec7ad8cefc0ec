"""Token classification end to end through the CLI: compare -> report -> export (merged, ONNX, int8) -> load ->
predict, on a tiny random BERT and a separable synthetic NER set; bad NER input exits 2 naming the place."""

from __future__ import annotations

import json

import pytest
from tests.e2e.test_cli import run_cli
from tests.ner_data import write_ner_config, write_ner_jsonl

import adaptlab

RUNGS = [
    {"method": "lora", "params": {"learning_rate": 2e-2, "batch_size": 8, "epochs": 4, "evals_per_epoch": 0}},
    {"method": "spacy_ner"},
]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, tiny_bert):
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    root = tmp_path_factory.mktemp("ner_ladder")
    config = write_ner_config(root, write_ner_jsonl(root / "ner.jsonl", 160), tiny_bert, RUNGS)
    board = compare(prepare(load_ladder(config)))
    return root, config, board


def test_the_board_ranks_by_entity_f1_with_a_floor(ladder):
    _, _, board = ladder
    assert board["primary_metric"] == "entity_micro_f1" and board["task"] == "token_classification"
    lora = next(e for e in board["rungs"] if e["rung"] == "lora")
    assert lora["status"] == "ok" and lora["value"] > 0.5
    assert lora["interval"][0] <= lora["value"] <= lora["interval"][1]
    assert "memorised_tags" in board["baselines"]


def test_report_has_the_entity_sections(ladder, monkeypatch, capsys):
    root, _, _ = ladder
    code, _, err = run_cli(monkeypatch, capsys, "report", root / "out")
    assert code == 0, err
    md = (root / "out" / "report.md").read_text()
    html = (root / "out" / "report.html").read_text()
    assert "## Entity types" in md and "## Entity type confusion" in md and "| PER |" in md
    assert "<mark" in html and 'id="worst-sentences"' in html or "No sentence" in md


def test_export_every_backend_keeps_the_run_s_entities(ladder, tmp_path, monkeypatch, capsys):
    root, _, _ = ladder
    run_dir, bundle = root / "out" / "lora", tmp_path / "bundle"
    code, _, err = run_cli(monkeypatch, capsys, "export", run_dir, "--to", bundle, "--merge", "--int8")
    assert code == 0, err
    report = json.loads((bundle / "parity.json").read_text())
    assert report["passed"] and [c["artifact"] for c in report["checks"]] == ["weights", "merged", "onnx", "int8"]
    assert all(c["max_abs_logit_diff"] < 1e-3 for c in report["checks"][1:3])
    records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()][:10]
    for backend in ("weights", "merged", "onnx"):
        tagger = adaptlab.load(bundle, backend=backend)
        found = tagger.predict([r["text"] for r in records])
        assert [[(e["start"], e["end"], e["label"]) for e in f["entities"]] for f in found] == \
            [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in records], backend


def test_a_rung_without_a_token_head_exports_its_weights_checked_on_its_tags(ladder, tmp_path, monkeypatch, capsys):
    root, _, _ = ladder
    run_dir, bundle = root / "out" / "spacy_ner", tmp_path / "bundle"
    code, _, err = run_cli(monkeypatch, capsys, "export", run_dir, "--to", tmp_path / "merged", "--merge")
    assert code == 2 and "internal error" not in err and not (tmp_path / "merged").exists()
    code, _, err = run_cli(monkeypatch, capsys, "export", run_dir, "--to", bundle)
    assert code == 0, err
    (check,) = json.loads((bundle / "parity.json").read_text())["checks"]
    assert check["passed"] and check["changed_predictions"] == 0 and check["max_abs_logit_diff"] is None
    records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()][:10]
    found = adaptlab.load(bundle).predict([r["text"] for r in records])
    assert [[(e["start"], e["end"], e["label"]) for e in f["entities"]] for f in found] == \
        [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in records]


def test_predict_prints_entities_with_offsets(ladder, monkeypatch, capsys):
    root, _, _ = ladder
    code, out, err = run_cli(monkeypatch, capsys, "predict", root / "out" / "lora", "alice went to paris", "--json")
    assert code == 0, err
    found = json.loads(out)[0]
    assert found["text"] == "alice went to paris"
    for e in found["entities"]:
        assert found["text"][e["start"]:e["end"]] == e["text"]


def test_a_bad_conll_line_exits_2_with_file_and_line(tmp_path, tiny_bert, monkeypatch, capsys):
    data = tmp_path / "bad.conll"
    data.write_text("alice\tB-PER\nwent\tO\n\nparis\tB-LOC\tX\n", encoding="utf-8")
    config = write_ner_config(tmp_path, data, tiny_bert, [{"method": "spacy_ner"}])
    code, out, err = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 2
    assert "bad.conll: line 4" in err + out and "3 fields" in err + out
    assert not (tmp_path / "out" / "leaderboard.json").exists()
