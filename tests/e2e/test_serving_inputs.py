"""Issue 14, the server's side: a bad request fails alone (4xx) and never takes its micro-batch down; a taken port is
a user error; file-system paths are for the admin only and checked against the roots before the disk is touched;
a text pair is refused by a rung trained on single texts (and required by one trained on pairs), in the server and
in ``adaptlab predict``.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from tests.conftest import sentiment_rows, write_config
from tests.e2e.test_cli import run_cli
from tests.e2e.test_serving import (
    TEXTS,
    FakeEngine,
    assert_error,
    bert_engine,
    classifier_adapter,
    lean_adapters,  # noqa: F401  (a fixture)
    live_server,
)

from adaptlab.serving.engine import ClassifyItem, EngineError, GenerationChunk, GenerationParams
from adaptlab.serving.settings import ServerSettings

KEY = "inputs-key"
#: JSON bodies with a lone UTF-16 surrogate (json.dumps can't write them as UTF-8, so they go as raw bytes).
BAD_BODIES = [
    b'{"model": "lp", "input": "\\ud800"}',
    b'{"model": "lean0", "input": ["a fine film", "\\udc00 tail"]}',
    b'{"model": "lp", "input": "fine", "text_pair": "\\ud800"}',
    b'{"model": "base", "input": "fine", "labels": {"good": "\\ud83d", "bad": "awful"}}',
    b'{"model": "lean0", "input": "\\ud800"}',
]


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert) -> dict[str, Path]:
    """Two finished linear-probe runs: one trained on single texts, one on text pairs (data.text_pair_column)."""
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    out = {}
    for kind in ("single", "pairs"):
        root = tmp_path_factory.mktemp(f"inputs_{kind}")
        data = root / "data.csv"
        rows = sentiment_rows(60, seed=5)
        if kind == "pairs":  # the second text carries the sentiment
            rows = [{"text": "a review of the film", "text_pair": r["text"], "label": r["label"]} for r in rows]
        with open(data, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        config = write_config(root, data, tiny_bert, [{"method": "linear_probe"}])
        if kind == "pairs":
            spec = yaml.safe_load(config.read_text())
            spec["data"]["text_pair_column"] = "text_pair"
            config.write_text(yaml.safe_dump(spec))
        board = compare(prepare(load_ladder(config)))
        assert [e["status"] for e in board["rungs"]] == ["ok"]
        out[kind] = root / "out" / "linear_probe"
    return out


@pytest.fixture(scope="module")
def even(tmp_path_factory, tiny_bert) -> Path:
    """A bare peft adapter with no bias in its head, so its scores show small changes in what it is fed."""
    return classifier_adapter(tmp_path_factory.mktemp("even") / "even", [0.0, 0.0], seed=4)


@pytest.fixture(scope="module")
def server(runs, lean_adapters, even):  # noqa: F811
    """uvicorn with a single-text probe (lp), a pair probe (lp_pairs) and bare peft adapters (lean0, even)."""
    from adaptlab.serving.app import create_app

    engine = bert_engine({"lp": runs["single"], "lp_pairs": runs["pairs"], "lean0": lean_adapters["lean0"],
                          "even": even})
    roots = [runs["single"].parent, lean_adapters["lean0"].parent]
    settings = ServerSettings(api_key=KEY, max_wait_ms=40, max_batch_size=64, adapter_roots=roots)
    with live_server(create_app(engine, settings)) as url:
        yield url


def post(url: str, body: dict | bytes, **kwargs) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(f"{url}/v1/classify", content=body, timeout=60, **kwargs)
    return httpx.post(f"{url}/v1/classify", json=body, timeout=60, **kwargs)


def scores(response: httpx.Response) -> list[dict[str, float]]:
    assert response.status_code == 200, response.text
    return [d["scores"] for d in response.json()["data"]]


def same(got: list[dict], want: list[dict]) -> bool:
    return len(got) == len(want) and all(
        g.keys() == w.keys() and max(abs(g[k] - w[k]) for k in g) < 1e-5 for g, w in zip(got, want))


# -- 1. a bad request fails alone ------------------------------------------------------------------------------


def test_lone_surrogates_get_422_and_their_batch_mates_their_own_answers(server):
    labels = {"good": "a great film", "bad": "an awful film"}
    good = []
    for i in range(40):
        name = ("lp", "lean0", "base")[i % 3]
        body = {"model": name, "input": [TEXTS[i % len(TEXTS)], TEXTS[(i + 2) % len(TEXTS)]]}
        if name == "base":
            body["labels"] = labels
        good.append(body)
    alone = [scores(post(server, body)) for body in good]  # one at a time: nothing to share a batch with

    requests = [*good, *BAD_BODIES]
    order = list(range(len(requests)))
    order = order[::2] + order[1::2]  # the bad ones land among the good ones
    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = dict(zip(order, pool.map(lambda i: post(server, requests[i]), order)))
    for i, body in enumerate(good):
        assert same(scores(responses[i]), alone[i]), (i, body)
    for j, raw in enumerate(BAD_BODIES):
        error = assert_error(responses[len(good) + j], 422, "invalid_request")
        assert "surrogate" in error["message"], error
        field = json.loads(raw.decode("ascii").replace("\\u", "U+"))  # which field carried it
        bad_field = next(k for k, v in field.items() if "U+" in json.dumps(v))
        assert error["message"].startswith(f"{bad_field}:"), error
    assert "item 1" in assert_error(responses[len(good) + 1], 422)["message"]
    metrics = httpx.get(f"{server}/metrics").text
    assert 'status="500"' not in metrics
    calls = next(float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith('adaptlab_batch_size_count{kind="classify"}'))
    assert calls < 2 * len(good)  # requests did share batches


def test_single_texts_and_pairs_in_one_batch_answer_as_alone(server, even):
    """A single text batched with pairs must not be encoded with an empty second segment."""
    engine = bert_engine({"even": even})
    single, pair = ClassifyItem(TEXTS[0]), ClassifyItem(TEXTS[1], pair=TEXTS[2])
    together = [r.scores for r in engine.classify("even", [single, pair])]
    assert same(together, [engine.classify("even", [item])[0].scores for item in (single, pair)])

    bodies = [{"model": "even", "input": TEXTS[i % len(TEXTS)],
               **({"text_pair": TEXTS[(i + 1) % len(TEXTS)]} if i % 2 else {})} for i in range(16)]
    alone = [scores(post(server, body)) for body in bodies]
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(lambda body: post(server, body), bodies))
    for body, response, want in zip(bodies, together, alone):
        assert same(scores(response), want), body


def test_batcher_runs_a_failed_batch_again_one_request_at_a_time():
    """Whatever fails for one request's items (here the fake engine's 'boom') fails that request only."""
    from adaptlab.serving.batching import Batcher

    engine = FakeEngine(delay=0.05)
    batcher = Batcher(engine, max_batch_size=16, max_wait_ms=50, max_queue=100)
    batcher.start()

    async def main():
        texts = ["a", "bb", "boom", "ccc", "dddd"]
        jobs = [batcher.classify("a", [ClassifyItem(t)], timeout=10) for t in texts]
        return texts, await asyncio.gather(*jobs, return_exceptions=True)

    try:
        texts, results = asyncio.run(main())
    finally:
        batcher.stop()
    assert engine.calls[0] == ("a", 5)  # tried together first, then alone
    assert sorted(n for _, n in engine.calls[1:]) == [1] * 5
    for text, result in zip(texts, results):
        if text == "boom":
            assert isinstance(result, EngineError)
        else:
            assert result[0].scores["text"] == len(text)


class _GenFake(FakeEngine):
    """Fails the whole decode loop if any prompt is 'boom', as a tokenizer does for text it can't encode."""

    def generate(self, adapter, prompts, params):
        self.calls.append((adapter, len(prompts)))
        time.sleep(self.delay)
        if "boom" in prompts:
            raise EngineError("boom", 400, "boom")
        for step in range(2):
            yield [GenerationChunk(i, f"{p}{step}", "length" if step else None) for i, p in enumerate(prompts)]


def test_batcher_isolates_a_failing_generation():
    from adaptlab.serving.batching import Batcher

    engine = _GenFake(delay=0.05)
    batcher = Batcher(engine, max_batch_size=16, max_wait_ms=50, max_queue=100)
    batcher.start()

    async def collect(prompt):
        return [c.text for batch in [b async for b in batcher.generate("b", [prompt], [None], timeout=10)]
                for c in batch]

    async def main():
        prompts = ["x", "boom", "y", "z"]
        return prompts, await asyncio.gather(*(collect(p) for p in prompts), return_exceptions=True)

    try:
        prompts, results = asyncio.run(main())
    finally:
        batcher.stop()
    assert engine.calls[0] == ("b", 4)
    for prompt, result in zip(prompts, results):
        if prompt == "boom":
            assert isinstance(result, EngineError)
        else:
            assert result == [f"{prompt}0", f"{prompt}1"]


def test_real_engine_failure_on_one_item_stays_with_its_request(lean_adapters):  # noqa: F811
    """Below the HTTP validation: the tokenizer itself refusing a text fails only the request that sent it."""
    from adaptlab.serving.batching import Batcher

    engine = bert_engine({"lean0": lean_adapters["lean0"]})
    texts = [*TEXTS[:4], "\ud800", *TEXTS[4:]]
    alone = {t: engine.classify("lean0", [ClassifyItem(t)])[0].scores for t in texts if t != "\ud800"}
    batcher = Batcher(engine, max_batch_size=16, max_wait_ms=50, max_queue=100)
    batcher.start()

    async def main():
        return await asyncio.gather(*(batcher.classify("lean0", [ClassifyItem(t)], timeout=30) for t in texts),
                                    return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    for text, result in zip(texts, results):
        if text == "\ud800":
            assert isinstance(result, Exception)
        else:
            assert same([result[0].scores], [alone[text]]), text


def test_an_unexpected_error_is_a_json_500_and_the_connection_lives_on():
    """An exception nothing else handled gets a JSON 500 from the app itself, not a dropped connection."""
    from adaptlab.serving.app import create_app
    from adaptlab.serving.engine import AdapterInfo

    class Broken(FakeEngine):
        def adapters(self):
            return [AdapterInfo("base", "generation", "base")]

        def chat_prompt(self, adapter, messages):
            raise KeyError("no template")

    with live_server(create_app(Broken())) as url, httpx.Client(base_url=url, timeout=10) as c:
        for _ in range(3):  # the same keep-alive connection each time
            r = c.post("/v1/chat/completions", json={"model": "base", "messages": [{"role": "user", "content": "x"}]})
            assert_error(r, 500, "internal_error")
            assert c.post("/v1/completions", json={"model": "base", "prompt": "x"}).status_code == 200
        assert 'status="500"} 3.0' in c.get("/metrics").text


@pytest.fixture(scope="module")
def llama_server(session_home):
    from adaptlab.models import resolve_model
    from adaptlab.serving.app import create_app
    from adaptlab.serving.transformers_engine import TransformersEngine

    resolve_model("tiny-random-llama", cache_dir=session_home / "models")
    engine = TransformersEngine("tiny-random-llama", device="cpu")
    with live_server(create_app(engine, ServerSettings(max_tokens=16, max_wait_ms=40))) as url:
        yield url, engine


def test_generation_bad_prompt_fails_alone(llama_server):
    url, _ = llama_server
    prompts = ["To be, or not to be", "Hamlet", "the king", "a ghost at night"]
    good = [{"model": "base", "prompt": prompts[i % 4], "max_tokens": 4, "temperature": 0} for i in range(8)]
    good += [{"model": "base", "messages": [{"role": "user", "content": prompts[i % 4]}], "max_tokens": 4,
              "temperature": 0} for i in range(4)]

    def send(body):
        if isinstance(body, bytes):
            path = "/v1/chat/completions" if b"messages" in body else "/v1/completions"
            return httpx.post(url + path, content=body, timeout=120)
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        return httpx.post(url + path, json=body, timeout=120)

    def text(response):
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        return choice["message"]["content"] if "message" in choice else choice["text"]

    alone = [text(send(body)) for body in good]
    bad = [b'{"model": "base", "prompt": "\\ud800", "max_tokens": 4, "temperature": 0}',
           b'{"model": "base", "prompt": ["Hamlet", "x\\udfff"], "max_tokens": 4}',
           b'{"model": "base", "messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 4}',
           b'{"model": "base", "prompt": "Hamlet", "stop": "\\ud800", "stream": true}']
    requests = [*good, *bad]
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        responses = list(pool.map(send, requests))
    assert [text(r) for r in responses[: len(good)]] == alone
    for response in responses[len(good):]:
        assert "surrogate" in assert_error(response, 422, "invalid_request")["message"]


def test_real_decode_failure_on_one_prompt_stays_with_its_request(llama_server):
    from adaptlab.serving.batching import Batcher

    _, engine = llama_server
    batcher = Batcher(engine, max_batch_size=16, max_wait_ms=50, max_queue=100)
    batcher.start()
    params = GenerationParams(max_tokens=3, temperature=0)

    async def collect(prompt):
        chunks = [c async for batch in batcher.generate("base", [prompt], [params], timeout=60) for c in batch]
        return "".join(c.text for c in chunks)

    prompts = ["Hamlet", "\ud800", "the king"]

    async def main():
        alone = {p: await collect(p) for p in prompts if p != "\ud800"}
        return alone, await asyncio.gather(*(collect(p) for p in prompts), return_exceptions=True)

    try:
        alone, results = asyncio.run(main())
    finally:
        batcher.stop()
    assert isinstance(results[1], Exception)
    assert results[0] == alone["Hamlet"] and results[2] == alone["the king"]


# -- 2. a taken port ---------------------------------------------------------------------------------------------


def test_serve_on_a_taken_port_is_a_user_error(monkeypatch, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_cli(monkeypatch, capsys, "serve", "--base", "tiny-random-bert", "--port", str(port))
    assert code == 2, (out, err)
    assert f"port {port} on 127.0.0.1 is already in use; pick another with --port" in err
    assert "serving" not in out


def test_serve_listens_on_a_free_port(tiny_bert, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "adaptlab", "serve", "--base", tiny_bert, "--port", str(port),
                             "--device", "cpu", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=tmp_path, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.5)
        assert health.json()["status"] == "ok" and health.json()["base"] == tiny_bert
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}" in out, (out, err)


# -- 3. paths: for the admin only, checked against the roots as text first -------------------------------------


def test_models_list_shows_paths_to_the_admin_only(server, runs, lean_adapters):  # noqa: F811
    public = httpx.get(f"{server}/v1/models", timeout=10)
    for folder in (runs["single"], runs["pairs"], lean_adapters["lean0"]):
        assert str(folder) not in public.text and str(folder.parent) not in public.text
    data = {m["id"]: m for m in public.json()["data"]}
    assert {data[n]["source"] for n in ("lp", "lp_pairs", "lean0")} == {None}
    assert data["base"]["source"] == "tiny-random-bert"  # a model name, not a place on disk
    for headers in ({"Authorization": "Bearer wrong"}, {"X-API-Key": ""}):
        assert str(runs["single"]) not in httpx.get(f"{server}/v1/models", headers=headers, timeout=10).text
    admin = httpx.get(f"{server}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    sources = {m["id"]: m["source"] for m in admin["data"]}
    assert sources["lp"] == str(runs["single"]) and sources["lean0"] == str(lean_adapters["lean0"])
    assert str(runs["single"]) not in httpx.get(f"{server}/healthz", timeout=10).text


def test_admin_load_outside_the_roots_is_403_whether_or_not_it_exists(server, runs, tmp_path):
    auth = {"Authorization": f"Bearer {KEY}"}
    root = runs["single"].parent

    def load(path) -> httpx.Response:
        return httpx.post(f"{server}/v1/admin/adapters", json={"name": "x", "path": str(path)}, headers=auth,
                          timeout=30)

    escape = root / "escape"
    escape.symlink_to(tmp_path, target_is_directory=True)
    for outside in (tmp_path / "missing", tmp_path, f"{root}/../{tmp_path.name}-missing", escape,
                    "/no/such/folder/anywhere", f"{root}/../../../../no/such"):
        error = assert_error(load(outside), 403, "invalid_adapter")
        assert "outside the allowed adapter roots" in error["message"] and "does not exist" not in error["message"]
    error = assert_error(load(root / "missing"), 400, "invalid_adapter")  # inside: now the disk is looked at
    assert "does not exist" in error["message"]
    assert_error(load(f"{root}/../{root.name}/missing"), 400, "invalid_adapter")


def test_check_path_looks_at_nothing_on_disk_outside_the_roots(tmp_path, monkeypatch):
    from adaptlab.serving.adapters import OutsideRoots, check_path

    root = tmp_path / "root"
    root.mkdir()
    touched = []
    for name in ("stat", "lstat"):
        real = getattr(os, name)

        def spy(path, *args, _real=real, **kwargs):
            touched.append(os.fspath(path) if not isinstance(path, int) else path)
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, spy)
    for outside in ("/srv/secret/adapter", str(tmp_path / "elsewhere"), f"{root}/../elsewhere", "~/adapters/x"):
        touched.clear()
        with pytest.raises(OutsideRoots):
            check_path(outside, [root])
        looked = [p for p in touched if isinstance(p, str) and not str(root).startswith(p)]
        assert not looked, (outside, looked)


# -- 4. text pairs ---------------------------------------------------------------------------------------------


def test_models_list_says_which_input_each_adapter_takes(server):
    data = {m["id"]: m for m in httpx.get(f"{server}/v1/models", timeout=10).json()["data"]}
    assert (data["lp"]["text_pair"], data["lp_pairs"]["text_pair"], data["lean0"]["text_pair"]) == (False, True, None)


def test_text_pair_must_fit_how_the_adapter_was_trained(server, runs):
    error = assert_error(post(server, {"model": "lp", "input": "a film", "text_pair": "a great film"}), 400,
                         "text_pair_not_supported")
    assert "adapter 'lp'" in error["message"] and "single texts" in error["message"]
    assert error["param"] == "text_pair"
    error = assert_error(post(server, {"model": "lp_pairs", "input": "a film"}), 400, "text_pair_required")
    assert "adapter 'lp_pairs'" in error["message"] and "text pairs" in error["message"]
    assert scores(post(server, {"model": "lp", "input": "a film"}))
    assert scores(post(server, {"model": "lean0", "input": "a film", "text_pair": "x"}))  # unknown: both taken
    rows = [json.loads(line) for line in (runs["pairs"] / "predictions.jsonl").read_text().splitlines()][:8]
    got = post(server, {"model": "lp_pairs", "input": [r["text"] for r in rows],
                        "text_pair": [r["text_pair"] for r in rows]}).json()["data"]
    assert [d["label"] for d in got] == [r["prediction"] for r in rows]
    assert same([d["scores"] for d in got], [r["scores"] for r in rows])


def test_predict_pair_must_fit_how_the_run_was_trained(runs, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "predict", runs["single"], "a film", "--pair", "a great film")
    assert code == 2, (out, err)
    assert "trained on single texts" in err and "--pair" in err
    code, out, err = run_cli(monkeypatch, capsys, "predict", runs["pairs"], "a film")
    assert code == 2 and "trained on text pairs" in err and "--pair" in err
    code, out, err = run_cli(monkeypatch, capsys, "predict", runs["pairs"], "a review of the film", "--pair",
                             "the great moving film cast", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["label"] in ("pos", "neg")
    code, out, err = run_cli(monkeypatch, capsys, "predict", runs["single"], "the great film", "--json")
    assert code == 0, err
