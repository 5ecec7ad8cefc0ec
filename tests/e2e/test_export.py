"""`adaptlab export` and `adaptlab.load` on a tiny trained ladder: bundles, merged, ONNX, int8, parity, failures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from tests.conftest import write_config, write_sentiment_csv
from tests.e2e.test_cli import run_cli

import adaptlab
from adaptlab.errors import UserError
from adaptlab.runtime import kernels_kept

RUNGS = [
    {"method": "lora", "params": {"learning_rate": 5e-3, "batch_size": 16, "max_steps": 4, "evals_per_epoch": 0}},
    {"method": "linear_probe"},
]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, tiny_bert):
    """A finished tiny ladder (LoRA and linear probe on tiny-random-bert), trained once for this module."""
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    root = tmp_path_factory.mktemp("export_ladder")
    data = write_sentiment_csv(root / "sentiment.csv", 120)
    board = compare(prepare(load_ladder(write_config(root, data, tiny_bert, RUNGS))))
    assert [e["status"] for e in board["rungs"]] == ["ok", "ok"]
    return root / "out"


def trained_lm_lora(tmp_path, data, task: str, learning_rate: float):
    """The run folder of an lm_lora rung trained (2 steps) on tiny-random-llama for ``task`` on ``data``."""
    from tests.generative_data import write_ladder

    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    params = {"max_steps": 2, "batch_size": 8, "learning_rate": learning_rate, "evals_per_epoch": 0}
    config = write_ladder(tmp_path, data, "tiny-random-llama", [{"method": "lm_lora", "params": params}],
                          task={"type": task})
    ladder = prepare(load_ladder(config))
    assert compare(ladder)["rungs"][0]["status"] == "ok"
    return ladder.output / "lm_lora"


def recorded(run_dir):
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    labels = list(rows[0]["scores"])
    return [r["text"] for r in rows], np.array([[r["scores"][n] for n in labels] for r in rows]), labels


def test_export_merge_onnx_int8_then_load_every_backend(ladder, tmp_path, monkeypatch, capsys):
    run_dir, bundle = ladder / "lora", tmp_path / "bundle"
    code, out, err = run_cli(monkeypatch, capsys, "export", run_dir, "--to", bundle, "--merge", "--int8")
    assert code == 0, err
    assert "parity against" in out and "exported" in out

    report = json.loads((bundle / "parity.json").read_text())
    assert report["passed"] and report["examples"] == 30
    assert [c["artifact"] for c in report["checks"]] == ["weights", "merged", "onnx", "int8"]
    fp32 = report["checks"][:3]
    assert all(c["max_abs_prob_diff"] < 1e-5 and c["changed_predictions"] == 0 for c in fp32)
    assert all(c["max_abs_logit_diff"] < 1e-5 for c in fp32[1:])  # merged and ONNX against the reloaded weights
    assert report["checks"][3]["max_abs_logit_diff"] > 0  # int8 really is quantised

    manifest = json.loads((bundle / "manifest.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert manifest["method"] == "lora" and manifest["task"] == "classification"
    assert manifest["base_model"] == {"spec": "tiny-random-bert", "source": "tiny",
                                      "sha256": metrics["provenance"]["model_sha256"]}
    assert manifest["labels"] == ["neg", "pos"] and manifest["metrics"] == metrics["metrics"]
    assert manifest["provenance"]["data_sha256"] == metrics["provenance"]["data_sha256"]
    assert set(manifest["artifacts"]) == {"weights", "merged", "onnx", "int8"}
    from adaptlab.models.hashing import file_sha256

    assert manifest["files"]["onnx/model.int8.onnx"] == file_sha256(bundle / "onnx" / "model.int8.onnx")
    assert not [p for p in bundle.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert (bundle / "onnx" / "tokenizer.json").is_file()

    texts, probs, labels = recorded(run_dir)
    for backend, tol in (("weights", 1e-5), ("merged", 1e-5), ("onnx", 1e-5), ("int8", 0.05)):
        predictor = adaptlab.load(bundle, backend=backend)
        assert predictor.labels == labels
        got = predictor.predict_proba(texts)
        assert np.max(np.abs(got - probs)) < tol, backend
    assert adaptlab.load(bundle).backend == "onnx"  # auto: the exact ONNX export first
    with kernels_kept():
        torch.backends.mkldnn.enabled = True
        one = adaptlab.load(bundle, backend="merged").predict("the wonderful superb film")
        assert not torch.backends.mkldnn.enabled  # fp32 on a CPU: the kernels its rung ran with (oneDNN off)
    assert one[0]["label"] in labels and abs(sum(one[0]["scores"].values()) - 1) < 1e-4

    # the merged folder is a plain transformers model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(bundle / "merged", use_safetensors=True)
    assert model.config.id2label == {0: "neg", 1: "pos"}


def test_parity_failure_exits_1_and_says_by_how_much(ladder, tmp_path, monkeypatch, capsys):
    bundle = tmp_path / "bundle"
    code, out, err = run_cli(monkeypatch, capsys, "export", ladder / "lora", "--to", bundle, "--int8",
                             "--int8-tol-prob", "1e-9")
    assert code == 1, (out, err)
    text = " ".join(err.split())
    assert "parity check failed" in text and "int8" in text and "max |Δprob|" in text and "over by" in text
    assert "internal error" not in text
    assert not bundle.exists()
    rejected = tmp_path / "bundle.failed"
    report = json.loads((rejected / "parity.json").read_text())
    assert report["passed"] is False
    assert {c["artifact"]: c["passed"] for c in report["checks"]} == {"weights": True, "onnx": True, "int8": False}


def test_embedding_rung_bundle(ladder, tmp_path, monkeypatch, capsys):
    run_dir, bundle = ladder / "linear_probe", tmp_path / "probe"
    code, _, err = run_cli(monkeypatch, capsys, "export", run_dir, "--to", bundle)
    assert code == 0, err
    texts, probs, _ = recorded(run_dir)
    predictor = adaptlab.load(bundle)
    assert predictor.backend == "weights"
    assert np.max(np.abs(predictor.predict_proba(texts) - probs)) < 1e-5
    code, _, err = run_cli(monkeypatch, capsys, "export", run_dir, "--to", tmp_path / "merged", "--merge")
    assert code == 2 and "has no transformers model to merge into" in " ".join(err.split())


def test_user_mistakes(ladder, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "export", tmp_path, "--to", tmp_path / "b")
    assert code == 2 and "not a run folder" in err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    code, _, err = run_cli(monkeypatch, capsys, "export", ladder / "lora", "--to", occupied)
    assert code == 2 and "not an adaptlab bundle" in err and (occupied / "notes.txt").exists()

    bundle = tmp_path / "bundle"
    assert run_cli(monkeypatch, capsys, "export", ladder / "lora", "--to", bundle)[0] == 0
    with pytest.raises(UserError, match="no 'onnx' export"):
        adaptlab.load(bundle, backend="onnx")
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    assert manifest["text_pair"] is False  # trained on single texts: the server refuses a text_pair for it
    from adaptlab.serving.adapters import resolve_adapter

    assert resolve_adapter("b", bundle).text_pair is False
    manifest["base_model"]["sha256"] = "0" * 64
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="wrong base"):
        adaptlab.load(tampered, backend="weights")

    (tmp_path / "a_file").write_text("mine")
    code, _, err = run_cli(monkeypatch, capsys, "export", ladder / "lora", "--to", tmp_path / "a_file" / "sub")
    assert code == 2 and "is an existing file, not a folder" in err and "--to" in err
    code, _, err = run_cli(monkeypatch, capsys, "report", ladder, "-o", tmp_path / "a_file")
    assert code == 2 and "is an existing file, not a folder" in err and "--output (-o)" in err
    config = ladder.parent / "ladder.yaml"
    code, _, err = run_cli(monkeypatch, capsys, "compare", config, "--output", bundle)
    assert code == 2 and "holds an exported bundle" in err and not (bundle / "ladder.json").exists()

    damaged = shutil.copytree(ladder / "linear_probe", tmp_path / "damaged")
    (damaged / "predictions.jsonl").write_text('{"id": 1, "prob')  # cut off mid-record
    code, _, err = run_cli(monkeypatch, capsys, "export", damaged, "--to", tmp_path / "d1")
    assert code == 2 and "predictions.jsonl: can't be read" in err and "damaged" in err and "Traceback" not in err
    (damaged / "predictions.jsonl").unlink()
    code, _, err = run_cli(monkeypatch, capsys, "export", damaged, "--to", tmp_path / "d2")
    assert code == 2 and "predictions.jsonl: can't be read" in err


def test_generation_run_exports_a_decoder_with_its_kv_cache(tmp_path, monkeypatch, capsys, session_home):
    """An lm_lora run on tiny-random-llama: merged and ONNX decoders (past key values in and out) match the rung."""
    import onnx
    import torch
    from tests.generative_data import write_generation_csv
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptlab.export.decoder import OnnxDecoder

    run_dir = trained_lm_lora(tmp_path, write_generation_csv(tmp_path / "gen.csv", 24), "generation", 5e-2)
    bundle = tmp_path / "bundle"
    code, out, err = run_cli(monkeypatch, capsys, "export", run_dir, "--to", bundle, "--merge", "--int8")
    assert code == 0, err
    report = json.loads((bundle / "parity.json").read_text())
    checks = {c["artifact"]: c for c in report["checks"]}
    assert set(checks) == {"weights", "merged", "onnx", "int8"} and report["primary_metric"] == "rougeL"
    assert checks["weights"]["changed_predictions"] == 0  # the same greedy loop reproduces the recorded outputs
    assert checks["merged"]["max_abs_logit_diff"] < 1e-4 and checks["onnx"]["max_abs_logit_diff"] < 1e-4
    names = [i.name for i in onnx.load(str(bundle / "onnx" / "model.onnx"), load_external_data=False).graph.input]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"] and "past.1.value" in names

    prompts = ["To be, or not to be", "Hamlet"]
    tok = AutoTokenizer.from_pretrained(bundle / "merged")
    model = AutoModelForCausalLM.from_pretrained(bundle / "merged", use_safetensors=True).eval()
    expected = []
    for p in prompts:
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        expected.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    assert any(expected)
    assert OnnxDecoder(bundle / "onnx" / "model.onnx").generate(prompts, max_new_tokens=6) == expected


def test_a_prompted_lm_classifier_exports_its_bundle_but_refuses_a_merged_classifier(tmp_path, monkeypatch, capsys):
    """lm_lora on a classification task answers through its prompt and label words: merged, it is a causal LM, not the
    sequence classifier a classification bundle's merged/ and ONNX files are loaded as. The export says so (no
    parity failure against a random classifier head, no traceback) and its plain bundle still ships."""
    run_dir = trained_lm_lora(tmp_path, write_sentiment_csv(tmp_path / "d.csv", 32), "classification", 1e-2)
    for flags in (["--merge"], ["--onnx"]):
        code, out, err = run_cli(monkeypatch, capsys, "export", run_dir, "--to", tmp_path / "merged", *flags)
        message = " ".join(err.split())
        assert code == 2 and "merges into a decoder, but runs of this task ship a classifier" in message, err
        assert "Traceback" not in err and not (tmp_path / "merged").exists()
        assert not (tmp_path / "merged.failed").exists()
    code, out, err = run_cli(monkeypatch, capsys, "export", run_dir, "--to", tmp_path / "bundle")
    assert code == 0, err
    report = json.loads((tmp_path / "bundle" / "parity.json").read_text())
    assert [c["artifact"] for c in report["checks"]] == ["weights"] and report["passed"]
    loaded = adaptlab.load(tmp_path / "bundle")
    texts, expected, labels = recorded(run_dir)
    assert np.allclose(loaded.predict_proba(texts[:8]), expected[:8], atol=1e-4)
