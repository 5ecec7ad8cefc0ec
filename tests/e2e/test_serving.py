"""The server in process (FastAPI TestClient): one tiny base, several adapters, every endpoint and error shape.

Helpers here (adapter builders, ``live_server``) are shared with the uvicorn and browser tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import sentiment_rows, write_config, write_sentiment_csv

from adaptlab.serving.engine import BASE, AdapterInfo, Classification, ClassifyItem, EngineError, GenerationChunk
from adaptlab.serving.settings import ServerSettings

TEXTS = [r["text"] for r in sentiment_rows(6, seed=3)]
KEY = "test-key"


# -- helpers shared with test_serving_http.py and test_serving_playground.py ------------------------------------


def classifier_adapter(dest: Path, bias: list[float], seed: int = 0) -> Path:
    """A peft LoRA classification adapter over tiny-random-bert whose head leans to one label by ``bias``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from adaptlab.models import resolve_model

    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(resolve_model("tiny-random-bert").location,
                                                              num_labels=len(bias))
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"],
                                            init_lora_weights=False))
    head = model.base_model.model.classifier.modules_to_save["default"]
    with torch.no_grad():
        head.bias.copy_(torch.tensor(bias))
    model.save_pretrained(str(dest))
    return dest


def reference_probs(adapter: Path, texts: list[str], num_labels: int) -> np.ndarray:
    """What the adapter predicts when loaded alone with plain peft (the server must agree)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adaptlab.models import resolve_model

    location = resolve_model("tiny-random-bert").location
    model = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(location, num_labels=num_labels), str(adapter)).eval()
    enc = AutoTokenizer.from_pretrained(location)(texts, padding=True, truncation=True, max_length=512,
                                                  return_tensors="pt")
    with torch.inference_mode():
        return torch.softmax(model(**enc).logits, -1).numpy()


@pytest.fixture(scope="session")
def lean_adapters(tmp_path_factory, tiny_bert) -> dict[str, Path]:
    """Two adapters that always disagree (one leans to LABEL_0, one to LABEL_1) and a three-label one."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "lean0": classifier_adapter(root / "lean0", [4.0, -4.0], seed=1),
        "lean1": classifier_adapter(root / "lean1", [-4.0, 4.0], seed=2),
        "three": classifier_adapter(root / "three", [0.0, 3.0, 0.0], seed=3),
    }


def bert_engine(adapters: dict[str, Path]):
    from adaptlab.serving.adapters import resolve_adapter
    from adaptlab.serving.transformers_engine import TransformersEngine

    engine = TransformersEngine("tiny-random-bert", device="cpu")
    for name, path in adapters.items():
        engine.load_adapter(resolve_adapter(name, path))
    return engine


@contextlib.contextmanager
def live_server(app):
    """``app`` on uvicorn at 127.0.0.1 on a free port, in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if code:
        assert error["code"] == code, error
    return error


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert) -> Path:
    """A tiny finished ladder: LoRA (a few steps) and a linear probe, and the LoRA exported as a bundle."""
    from adaptlab.config import load_ladder
    from adaptlab.export import export_run
    from adaptlab.pipeline import compare, prepare

    root = tmp_path_factory.mktemp("serve_ladder")
    data = write_sentiment_csv(root / "data.csv", 80)
    rungs = [{"method": "lora", "params": {"max_steps": 3, "batch_size": 16, "evals_per_epoch": 0}},
             {"method": "linear_probe"}]
    board = compare(prepare(load_ladder(write_config(root, data, tiny_bert, rungs))))
    assert [e["status"] for e in board["rungs"]] == ["ok", "ok"]
    export_run(root / "out" / "lora", root / "bundle")
    return root


@pytest.fixture(scope="module")
def client(trained, lean_adapters):
    from fastapi.testclient import TestClient

    from adaptlab.serving.app import create_app

    engine = bert_engine({"lora": trained / "out" / "lora", "probe": trained / "out" / "linear_probe",
                          "bundle": trained / "bundle", **lean_adapters})
    settings = ServerSettings(api_key=KEY, adapter_roots=[trained, *{p.parent for p in lean_adapters.values()}],
                              max_body_bytes=50_000, max_inputs=8)
    with TestClient(create_app(engine, settings)) as c:
        yield c


# -- classification --------------------------------------------------------------------------------------------


def recorded(run_dir: Path) -> tuple[list[str], list[dict]]:
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return [r["text"] for r in rows], rows


@pytest.mark.parametrize("name, run", [("lora", "out/lora"), ("probe", "out/linear_probe"), ("bundle", "out/lora")])
def test_run_and_bundle_adapters_answer_as_their_runs(client, trained, name, run):
    texts, rows = recorded(trained / run)
    for start in range(0, len(texts), 8):
        response = client.post("/v1/classify", json={"model": name, "input": texts[start : start + 8]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == name and body["usage"] == {"inputs": len(body["data"])}
        for got, want in zip(body["data"], rows[start : start + 8]):
            assert got["label"] == want["prediction"]
            assert max(abs(got["scores"][k] - v) for k, v in want["scores"].items()) < 1e-5


def test_adapters_with_their_own_heads_and_label_counts(client, lean_adapters):
    for name, n in (("lean0", 2), ("lean1", 2), ("three", 3)):
        want = reference_probs(lean_adapters[name], TEXTS, n)
        body = client.post("/v1/classify", json={"model": name, "input": TEXTS}).json()
        got = np.array([[d["scores"][f"LABEL_{i}"] for i in range(n)] for d in body["data"]])
        assert np.max(np.abs(got - want)) < 1e-5, name
    labels = {}
    for name in ("lean0", "lean1", "three"):
        data = client.post("/v1/classify", json={"model": name, "input": TEXTS}).json()["data"]
        labels[name] = {d["label"] for d in data}
    assert labels == {"lean0": {"LABEL_0"}, "lean1": {"LABEL_1"}, "three": {"LABEL_1"}}


def test_base_classifies_zero_shot_with_labels(client):
    body = client.post("/v1/classify", json={"model": "base", "input": TEXTS[:2],
                                             "labels": {"pos": "a great film", "neg": "an awful film"}}).json()
    for d in body["data"]:
        assert set(d["scores"]) == {"pos", "neg"} and abs(sum(d["scores"].values()) - 1) < 1e-5
    assert_error(client.post("/v1/classify", json={"model": "base", "input": "x"}), 400, "labels_required")
    assert_error(client.post("/v1/classify", json={"model": "lora", "input": "x", "labels": ["a", "b"]}), 400)


def test_models_list(client):
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert set(data) == {"base", "lora", "probe", "bundle", "lean0", "lean1", "three"}
    assert data["lora"]["labels"] == ["neg", "pos"] and data["lora"]["kind"] == "peft"
    assert data["probe"]["kind"] == "head" and data["probe"]["method"] == "linear_probe"
    assert data["base"]["kind"] == "base" and data["base"]["object"] == "model"


# -- admin -----------------------------------------------------------------------------------------------------


def test_admin_load_and_unload(client, trained, lean_adapters, tmp_path):
    body = {"name": "extra", "path": str(lean_adapters["lean1"])}
    assert_error(client.post("/v1/admin/adapters", json=body), 401, "invalid_api_key")
    assert_error(client.post("/v1/admin/adapters", json=body, headers={"Authorization": "Bearer nope"}), 401)
    auth = {"Authorization": f"Bearer {KEY}"}
    assert_error(client.post("/v1/admin/adapters", json={**body, "name": "../x"}, headers=auth), 400,
                 "invalid_model_name")
    assert_error(client.post("/v1/admin/adapters", json={**body, "name": "a/b"}, headers=auth), 400)
    assert_error(client.post("/v1/admin/adapters", json={**body, "path": str(tmp_path)}, headers=auth), 403)
    assert_error(client.post("/v1/admin/adapters", json={**body, "path": str(trained / "nope")}, headers=auth), 400)
    created = client.post("/v1/admin/adapters", json=body, headers={"X-API-Key": KEY})
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "extra"
    assert_error(client.post("/v1/admin/adapters", json=body, headers=auth), 409, "adapter_exists")
    labels = client.post("/v1/classify", json={"model": "extra", "input": TEXTS}).json()["data"]
    assert {d["label"] for d in labels} == {"LABEL_1"}
    assert client.delete("/v1/admin/adapters/extra", headers=auth).json() == {"object": "model", "id": "extra",
                                                                              "deleted": True}
    assert_error(client.post("/v1/classify", json={"model": "extra", "input": "x"}), 404, "model_not_found")
    assert_error(client.delete("/v1/admin/adapters/extra", headers=auth), 404)
    assert_error(client.delete("/v1/admin/adapters/base", headers=auth), 400)
    assert_error(client.delete("/v1/admin/adapters/lean0"), 401)


def test_admin_disabled_without_key(lean_adapters):
    from fastapi.testclient import TestClient

    from adaptlab.serving.app import create_app

    with TestClient(create_app(FakeEngine(), ServerSettings())) as c:
        r = c.post("/v1/admin/adapters", json={"name": "x", "path": str(lean_adapters["lean0"])},
                   headers={"Authorization": "Bearer anything"})
        assert_error(r, 403, "admin_disabled")


def test_unloading_every_adapter_leaves_the_base(lean_adapters):
    from adaptlab.serving.adapters import resolve_adapter

    engine = bert_engine({"lean0": lean_adapters["lean0"]})
    engine.unload_adapter("lean0")
    assert [a.name for a in engine.adapters()] == [BASE]
    out = engine.classify(BASE, [ClassifyItem("a film", labels={"a": "a", "b": "b"})])
    assert set(out[0].scores) == {"a", "b"}
    engine.load_adapter(resolve_adapter("lean1", lean_adapters["lean1"]))
    assert engine.classify("lean1", [ClassifyItem("a film")])[0].label == "LABEL_1"


# -- errors and metrics ------------------------------------------------------------------------------------------


def test_errors_are_json_and_the_server_keeps_serving(client):
    assert_error(client.post("/v1/classify", content=b'{"model": "lora", "input": '), 400, "invalid_json")
    error = assert_error(client.post("/v1/classify", json={"model": "lroa", "input": "x"}), 404, "model_not_found")
    assert "Did you mean 'lora'" in error["message"] and "base" in error["available"]
    assert_error(client.post("/v1/classify", json={"model": "../../etc/passwd", "input": "x"}), 400,
                 "invalid_model_name")
    assert_error(client.post("/v1/classify", json={"model": "lora"}), 422, "invalid_request")
    assert_error(client.post("/v1/classify", json={"model": "lora", "input": ["x"] * 9}), 400, "too_many_inputs")
    assert_error(client.post("/v1/classify", json={"model": "lora", "input": "x" * 60_000}), 413, "body_too_large")
    assert_error(client.post("/v1/completions", json={"model": "lora", "prompt": "x"}), 400, "wrong_endpoint")
    assert_error(client.get("/v1/nothing"), 404)
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.post("/v1/classify", json={"model": "lora", "input": "x"}).status_code == 200
    text = client.get("/metrics").text
    assert 'adaptlab_http_requests_total{path="/v1/classify",status="413"} 1.0' in text
    assert 'adaptlab_model_requests_total{endpoint="classify",model="lora"}' in text
    assert "adaptlab_batch_size_bucket" in text and "adaptlab_queue_depth 0.0" in text


# -- generation ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(tmp_path_factory, session_home):
    """tiny-random-llama with a LoRA adapter (random, non-zero) and what plain transformers generates greedily."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptlab.models import resolve_model

    location = resolve_model("tiny-random-llama", cache_dir=session_home / "models").location
    adapter = tmp_path_factory.mktemp("llama") / "lora"
    torch.manual_seed(0)
    get_peft_model(AutoModelForCausalLM.from_pretrained(location),
                   LoraConfig(task_type="CAUSAL_LM", r=4, init_lora_weights=False,
                              target_modules=["q_proj", "v_proj"])).save_pretrained(str(adapter))
    tok = AutoTokenizer.from_pretrained(location)
    prompts = ["To be, or not to be", "Hamlet"]
    expected = {}
    for name in ("base", "lora"):
        model = AutoModelForCausalLM.from_pretrained(location)
        if name == "lora":
            model = PeftModel.from_pretrained(model, str(adapter))
        outs = []
        for p in prompts:
            enc = tok(p, return_tensors="pt")
            ids = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
            outs.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
        expected[name] = outs
    assert expected["base"] != expected["lora"]
    return adapter, prompts, expected


@pytest.fixture(scope="module")
def gen_client(llama):
    from fastapi.testclient import TestClient

    from adaptlab.serving.adapters import resolve_adapter
    from adaptlab.serving.app import create_app
    from adaptlab.serving.transformers_engine import TransformersEngine

    engine = TransformersEngine("tiny-random-llama", device="cpu")
    engine.load_adapter(resolve_adapter("lora", llama[0]))
    with TestClient(create_app(engine, ServerSettings(max_tokens=32))) as c:
        yield c


def sse(response) -> list:
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_completions_match_plain_transformers(gen_client, llama):
    _, prompts, expected = llama
    for name in ("base", "lora"):
        body = gen_client.post("/v1/completions", json={"model": name, "prompt": prompts, "max_tokens": 6,
                                                        "temperature": 0}).json()
        assert body["object"] == "text_completion" and body["model"] == name
        assert [c["text"] for c in body["choices"]] == expected[name]
        assert all(c["finish_reason"] in ("length", "stop") for c in body["choices"])
        assert body["usage"]["completion_tokens"] > 0
        stream = gen_client.post("/v1/completions", json={"model": name, "prompt": prompts[0], "max_tokens": 6,
                                                          "temperature": 0, "stream": True})
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = sse(stream)
        assert "".join(e["choices"][0]["text"] for e in events) == expected[name][0]
        assert events[-1]["choices"][0]["finish_reason"] is not None


def test_chat_completions(gen_client):
    messages = [{"role": "user", "content": "Who is there?"}]
    body = gen_client.post("/v1/chat/completions", json={"model": "lora", "messages": messages, "max_tokens": 5,
                                                         "temperature": 0, "user": "ignored"}).json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    events = sse(gen_client.post("/v1/chat/completions", json={"model": "lora", "messages": messages,
                                                               "max_tokens": 5, "temperature": 0, "stream": True}))
    assert events[0]["object"] == "chat.completion.chunk" and events[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert content == body["choices"][0]["message"]["content"]
    sampled = gen_client.post("/v1/chat/completions", json={"model": "base", "messages": messages, "max_tokens": 4,
                                                            "temperature": 0.8, "top_p": 0.9, "seed": 1})
    assert sampled.status_code == 200


def test_generation_limits(gen_client):
    error = assert_error(gen_client.post("/v1/completions", json={"model": "lora", "prompt": "x",
                                                                  "max_tokens": 10**9}), 400, "max_tokens_exceeded")
    assert "32" in error["message"]
    assert_error(gen_client.post("/v1/completions", json={"model": "lora", "prompt": "x", "n": 2}), 400)
    assert_error(gen_client.post("/v1/completions", json={"model": "lora", "prompt": "x", "max_tokens": -1}), 422)
    assert_error(gen_client.post("/v1/classify", json={"model": "lora", "input": "x"}), 400, "wrong_endpoint")
    ok = gen_client.post("/v1/completions", json={"model": "lora", "prompt": "x", "max_tokens": 2})
    assert ok.status_code == 200


# -- the batcher ---------------------------------------------------------------------------------------------------


class FakeEngine:
    """An engine that records its batches, labels every text with the adapter's name, and can be slowed down."""

    base_name = "fake"

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls: list[tuple[str, int]] = []

    def adapters(self):
        return [AdapterInfo(BASE, "classification", "base"), AdapterInfo("a", "classification", "peft"),
                AdapterInfo("b", "classification", "peft")]

    def classify(self, adapter, batch):
        self.calls.append((adapter, len(batch)))
        time.sleep(self.delay)
        if any(item.text == "boom" for item in batch):
            raise EngineError("boom", 400, "boom")
        return [Classification(adapter, {adapter: 1.0, "text": float(len(item.text))}) for item in batch]

    def generate(self, adapter, prompts, params):
        for step in range(2):
            yield [GenerationChunk(i, f"{adapter}{step}", "length" if step else None) for i in range(len(prompts))]

    def chat_prompt(self, adapter, messages):
        return messages[-1]["content"]

    def load_adapter(self, spec):
        raise NotImplementedError

    def unload_adapter(self, name):
        raise NotImplementedError


def test_batcher_groups_by_adapter_and_routes_results():
    from adaptlab.serving.batching import Batcher

    engine = FakeEngine(delay=0.02)
    batcher = Batcher(engine, max_batch_size=8, max_wait_ms=20, max_queue=100)
    batcher.start()

    async def main():
        jobs = [batcher.classify("ab"[i % 2], [ClassifyItem("x" * i)], timeout=10) for i in range(24)]
        return await asyncio.gather(*jobs)

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    for i, (result,) in enumerate(results):
        assert result.label == "ab"[i % 2] and result.scores["text"] == i
    assert sum(n for _, n in engine.calls) == 24
    assert len(engine.calls) < 24 and max(n for _, n in engine.calls) <= 8


def test_batcher_queue_full_timeout_and_errors():
    from adaptlab.serving.batching import Batcher, QueueFull, RequestTimeout

    engine = FakeEngine(delay=0.3)
    batcher = Batcher(engine, max_batch_size=1, max_wait_ms=0, max_queue=2)
    batcher.start()

    async def main():
        first = asyncio.ensure_future(batcher.classify("a", [ClassifyItem("1")], timeout=10))
        await asyncio.sleep(0.05)  # the worker is busy with the first
        waiting = [asyncio.ensure_future(batcher.classify("a", [ClassifyItem(str(i))], timeout=10)) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.classify("a", [ClassifyItem("overflow")], timeout=10)
        await asyncio.gather(first, *waiting)
        with pytest.raises(RequestTimeout):
            await batcher.classify("b", [ClassifyItem("slow")], timeout=0.05)
        with pytest.raises(EngineError):
            await batcher.classify("a", [ClassifyItem("boom")], timeout=10)
        chunks = [c async for c in batcher.generate("b", ["p"], [None], timeout=10)]
        return await batcher.classify("a", [ClassifyItem("after")], timeout=10), chunks

    try:
        (after,), chunks = asyncio.run(main())
    finally:
        batcher.stop()
    assert after.label == "a"
    assert [[c.text for c in batch] for batch in chunks] == [["b0"], ["b1"]]


def test_check_name_rules():
    from adaptlab.errors import UserError
    from adaptlab.serving.adapters import check_name, parse_adapter_option

    for good in ("rt", "rt-lora_2", "v1.2", "A" * 64):
        assert check_name(good) == good
    for bad in ("", "../x", "a/b", "a\\b", "..", "a..b", ".hidden", "-x", "a b", "A" * 65, "base", "x\x00"):
        with pytest.raises(UserError):
            check_name(bad)
    assert check_name("base", allow_base=True) == "base"
    assert parse_adapter_option("rt=runs/x")[0] == "rt"
    with pytest.raises(UserError, match="NAME=PATH"):
        parse_adapter_option("runs/x")


def test_serves_a_generation_run(tmp_path, session_home):
    """An lm_lora run (the generative rungs' peft adapter in weights/adapter) served next to the bare base."""
    import torch
    from fastapi.testclient import TestClient
    from peft import PeftModel
    from tests.generative_data import write_generation_csv, write_ladder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare
    from adaptlab.serving.adapters import resolve_adapter
    from adaptlab.serving.app import create_app
    from adaptlab.serving.transformers_engine import TransformersEngine

    data = write_generation_csv(tmp_path / "gen.csv", 24)
    params = {"max_steps": 2, "batch_size": 8, "learning_rate": 5e-2, "evals_per_epoch": 0}
    config = write_ladder(tmp_path, data, "tiny-random-llama", [{"method": "lm_lora", "params": params}],
                          task={"type": "generation"})
    ladder = prepare(load_ladder(config))
    assert compare(ladder)["rungs"][0]["status"] == "ok"
    run_dir = ladder.output / "lm_lora"
    spec = resolve_adapter("tuned", run_dir)
    assert spec.task == "generation" and spec.kind == "peft"

    engine = TransformersEngine("tiny-random-llama", device="cpu")
    engine.load_adapter(spec)
    with TestClient(create_app(engine)) as c:
        models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert models["tuned"]["task"] == "generation" and models["tuned"]["method"] == "lm_lora"
        got = c.post("/v1/completions", json={"model": "tuned", "prompt": "Hamlet", "max_tokens": 5,
                                               "temperature": 0}).json()["choices"][0]["text"]
    location = engine.resolved.location
    tok = AutoTokenizer.from_pretrained(location)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(location), str(spec.weights)).eval()
    enc = tok("Hamlet", return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert got == tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
