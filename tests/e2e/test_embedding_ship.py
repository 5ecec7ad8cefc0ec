"""Shipping embedding rungs: ``POST /v1/embeddings`` with many LoRA embedding adapters on one base, bundles with
ONNX/int8 parity, ``adaptlab.load`` and ``adaptlab predict`` on an embedding run.

A tiny retrieval ladder (tiny-random-bert; two LoRA MNR rungs with different seeds, so they embed differently, and
one fully trained MNR rung) is trained once. The served embeddings of each adapter must be the ones its rung
computes (``method.encode``), the base's the untrained body's, and two adapters must differ from each other and
from the base (so "equal" can fail). A fully trained rung is refused as an adapter with the command that serves it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.generative_data import one_torch_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)

FAST = {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-2, "evals_per_epoch": 0}
TOPICS = ["apple", "river", "guitar", "planet", "castle", "tiger", "violin", "desert", "rocket", "garden",
          "pirate", "glacier", "piano", "forest", "comet", "harbor"]


def write_retrieval(path: Path, n: int) -> Path:
    rows = [{"query": f"tell me about the {TOPICS[i % len(TOPICS)]} number {i}",
             "document": f"a note on {TOPICS[i % len(TOPICS)]} and item {i} here"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, tiny_bert) -> Path:
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    root = tmp_path_factory.mktemp("embed_ship")
    data = write_retrieval(root / "pairs.jsonl", 96)
    cfg = {"name": "tiny_embed", "task": {"type": "embedding"}, "model": tiny_bert, "seed": 0,
           "data": {"path": str(data), "test_size": 0.25, "validation_size": 0.0, "max_length": 24},
           "output_dir": str(root / "out"),
           "rungs": [{"method": "embedding_base", "name": "base"},
                     {"method": "embedding_mnr", "name": "mnr_a", "params": {**FAST, "lora": True}},
                     {"method": "embedding_mnr", "name": "mnr_b", "params": {**FAST, "lora": True,
                                                                            "learning_rate": 3e-2}},
                     {"method": "embedding_mnr", "name": "mnr_full", "params": FAST}]}
    (root / "ladder.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    board = compare(prepare(load_ladder(root / "ladder.yaml")))
    assert [e["status"] for e in board["rungs"]] == ["ok"] * 4, board
    return root


@pytest.fixture(scope="module")
def client(ladder):
    from fastapi.testclient import TestClient

    from adaptlab.serving.adapters import resolve_adapter
    from adaptlab.serving.app import create_app
    from adaptlab.serving.settings import ServerSettings
    from adaptlab.serving.transformers_engine import TransformersEngine

    engine = TransformersEngine("tiny-random-bert", device="cpu")
    for name in ("mnr_a", "mnr_b"):
        engine.load_adapter(resolve_adapter(name, ladder / "out" / name))
    with TestClient(create_app(engine, ServerSettings(max_inputs=8))) as c:
        yield c


TEXTS = ["tell me about the river", "a note on guitar and item 3 here", "comets and castles"]


def served(client, model: str, texts: list[str], **extra) -> np.ndarray:
    response = client.post("/v1/embeddings", json={"model": model, "input": texts, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == model
    assert [d["index"] for d in body["data"]] == list(range(len(texts)))
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(texts)
    if extra.get("encoding_format") == "base64":
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    return np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)


def run_encode(run_dir: Path, texts: list[str]) -> np.ndarray:
    from adaptlab.pipeline import load_run

    _, method, _ = load_run(run_dir)
    return method.encode(texts)


def test_each_served_adapter_embeds_as_its_rung_and_the_base_as_the_untrained_body(client, ladder):
    vectors = {name: served(client, name, TEXTS) for name in ("base", "mnr_a", "mnr_b")}
    for name in ("mnr_a", "mnr_b"):
        np.testing.assert_allclose(vectors[name], run_encode(ladder / "out" / name, TEXTS), atol=1e-5)
    np.testing.assert_allclose(vectors["base"], run_encode(ladder / "out" / "base", TEXTS), atol=1e-5)
    assert np.abs(vectors["mnr_a"] - vectors["mnr_b"]).max() > 1e-3  # two adapters, two answers
    assert np.abs(vectors["mnr_a"] - vectors["base"]).max() > 1e-3
    np.testing.assert_allclose(np.linalg.norm(vectors["mnr_a"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(served(client, "mnr_a", TEXTS, encoding_format="base64"), vectors["mnr_a"], atol=1e-7)


def test_wrong_inputs_get_json_errors(client):
    wrong = client.post("/v1/embeddings", json={"model": "mnr_a", "input": TEXTS, "dimensions": 3})
    assert wrong.status_code == 400 and "dimensions" in wrong.json()["error"]["message"]
    assert client.post("/v1/embeddings", json={"model": "nope", "input": "x"}).status_code == 404
    assert client.post("/v1/embeddings", json={"model": "mnr_a", "input": []}).status_code == 400
    assert client.post("/v1/embeddings", json={"model": "mnr_a", "input": ["x"] * 9}).status_code == 400
    assert client.post("/v1/classify", json={"model": "mnr_a", "input": "x"}).json()["error"]["code"] == \
        "wrong_endpoint"


def test_a_fully_trained_rung_is_refused_as_an_adapter_and_told_to_be_the_base(ladder):
    from adaptlab.errors import UserError
    from adaptlab.serving.adapters import resolve_adapter

    with pytest.raises(UserError, match="--base .*weights/model"):
        resolve_adapter("full", ladder / "out" / "mnr_full")


def test_bundle_exports_pass_parity_and_load_as_encoders(ladder):
    import adaptlab
    from adaptlab.export import export_run

    reference = run_encode(ladder / "out" / "mnr_a", TEXTS)
    report = export_run(ladder / "out" / "mnr_a", ladder / "bundle_a", merge=True, onnx=True, int8=True)
    assert report["passed"] and [c["artifact"] for c in report["checks"]] == ["weights", "merged", "onnx", "int8"]
    assert report["checks"][2]["max_abs_prob_diff"] < 1e-4
    for backend in ("weights", "merged", "onnx"):
        encoder = adaptlab.load(ladder / "bundle_a", backend=backend)
        np.testing.assert_allclose(encoder.encode(TEXTS), reference, atol=1e-4)
    assert np.abs(adaptlab.load(ladder / "bundle_a", backend="int8").encode(TEXTS) - reference).max() < 0.2
    base = export_run(ladder / "out" / "base", ladder / "bundle_base", merge=True, onnx=True)  # the untrained body
    assert base["passed"] and [c["artifact"] for c in base["checks"]] == ["weights", "merged", "onnx"]
    np.testing.assert_allclose(adaptlab.load(ladder / "bundle_base", backend="onnx").encode(TEXTS),
                               run_encode(ladder / "out" / "base", TEXTS), atol=1e-4)


def test_parity_fails_when_the_exported_weights_differ(ladder, tmp_path):
    """A run whose recorded cosines no longer match its weights must fail parity (the check can fail)."""
    import shutil

    from adaptlab.export import export_run
    from adaptlab.export.parity import ParityError

    run = shutil.copytree(ladder / "out" / "mnr_a", tmp_path / "mnr_a")
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    rows[0]["top_scores"] = [s - 0.5 for s in rows[0]["top_scores"]]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ParityError):
        export_run(run, tmp_path / "bundle")


def test_predict_prints_cosines_between_the_texts(ladder, monkeypatch, capsys):
    from tests.e2e.test_cli import run_cli

    code, stdout, _ = run_cli(monkeypatch, capsys, "predict", ladder / "out" / "mnr_a", *TEXTS[:2], "--json")
    assert code == 0
    out = json.loads(stdout)
    vectors = run_encode(ladder / "out" / "mnr_a", TEXTS[:2])
    assert out[0]["cosine"]["1"] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-4)


def test_embedding_rungs_start_from_a_domain_mlm_stage(ladder, tmp_path):
    """embedding_base and a LoRA MNR rung with ``from: domain_mlm`` embed with the pre-trained encoder (not the base
    model's), ship it with the adapter and reload identically without the stage's folder."""
    import shutil

    import torch

    from adaptlab.config import load_ladder
    from adaptlab.methods._encoder_start import encoder_state
    from adaptlab.pipeline import compare, load_run, prepare

    cfg = yaml.safe_load((ladder / "ladder.yaml").read_text(encoding="utf-8"))
    cfg["output_dir"] = str(tmp_path / "out")
    cfg["rungs"] = [{"method": "domain_mlm", "params": {"max_steps": 4, "batch_size": 8, "learning_rate": 1e-2,
                                                        "evals_per_epoch": 0}},
                    {"method": "embedding_base", "name": "base"},
                    {"method": "embedding_base", "name": "base_domain", "from": "domain_mlm"},
                    {"method": "embedding_mnr", "name": "mnr_domain", "from": "domain_mlm",
                     "params": {**FAST, "lora": True}}]
    (tmp_path / "ladder.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    board = compare(prepare(load_ladder(tmp_path / "ladder.yaml")))
    assert {e["rung"]: e["status"] for e in board["rungs"]} == dict.fromkeys(
        ("domain_mlm", "base", "base_domain", "mnr_domain"), "ok")
    out = tmp_path / "out"
    before = {name: run_encode(out / name, TEXTS) for name in ("base", "base_domain", "mnr_domain")}
    assert np.abs(before["base_domain"] - before["base"]).max() > 1e-3  # another encoder, other embeddings
    state = encoder_state(out / "domain_mlm" / "weights")
    _, method, _ = load_run(out / "mnr_domain")
    lora_free = {k: v for k, v in method.model.transformers_model.state_dict().items() if "lora" not in k}
    name = "embeddings.word_embeddings.weight"
    assert any(k.endswith(name) and torch.equal(v, state[name]) for k, v in lora_free.items())
    shutil.rmtree(out / "domain_mlm")
    for rung in ("base_domain", "mnr_domain"):
        np.testing.assert_allclose(run_encode(out / rung, TEXTS), before[rung], atol=1e-5)


def test_a_broken_embedding_adapter_is_refused_with_a_clear_error(ladder, tmp_path):
    import shutil

    from adaptlab.serving.adapters import resolve_adapter
    from adaptlab.serving.engine import EngineError
    from adaptlab.serving.transformers_engine import TransformersEngine

    run = shutil.copytree(ladder / "out" / "mnr_a", tmp_path / "mnr_a")
    (run / "weights" / "adapter" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    engine = TransformersEngine("tiny-random-bert", device="cpu")
    with pytest.raises(EngineError, match="no readable adapter_model.safetensors") as info:
        engine.load_adapter(resolve_adapter("broken", run))
    assert info.value.status == 422
    assert engine.embed("base", ["still serving"])[0].tokens > 0
