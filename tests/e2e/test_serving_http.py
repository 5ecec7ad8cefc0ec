"""The server on a real uvicorn socket (127.0.0.1 only): concurrent mixed adapters, abuse, 429 and timeouts.

Bounded: a few hundred requests in all, every client with a timeout.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tests.e2e.test_serving import (
    TEXTS,
    FakeEngine,
    assert_error,
    bert_engine,
    lean_adapters,  # noqa: F401  (a fixture)
    live_server,
)

from adaptlab.serving.settings import ServerSettings

KEY = "s3cret"
EXPECTED = {"lean0": "LABEL_0", "lean1": "LABEL_1", "three": "LABEL_1"}


@pytest.fixture(scope="module")
def server(lean_adapters):  # noqa: F811
    from adaptlab.serving.app import create_app

    engine = bert_engine(lean_adapters)
    settings = ServerSettings(api_key=KEY, max_wait_ms=10, max_body_bytes=100_000, max_tokens=64,
                              adapter_roots=[next(iter(lean_adapters.values())).parent])
    with live_server(create_app(engine, settings)) as url:
        yield url


def test_concurrent_mixed_adapters_lose_and_mix_nothing(server):
    names = ["lean0", "lean1", "three", "base"]

    def one(i: int) -> tuple[str, int, dict]:
        name = names[i % len(names)]
        body = {"model": name, "input": [TEXTS[i % len(TEXTS)], TEXTS[(i + 1) % len(TEXTS)]]}
        if name == "base":
            body["labels"] = {"yes": "a great film", "no": "an awful film"}
        r = httpx.post(f"{server}/v1/classify", json=body, timeout=60)
        return name, r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(192)))
    assert len(results) == 192
    for name, status, body in results:
        assert status == 200, body
        assert body["model"] == name and len(body["data"]) == 2
        for d in body["data"]:
            assert d["label"] == EXPECTED.get(name, d["label"]) and d["label"] in d["scores"]
            if name == "base":
                assert set(d["scores"]) == {"yes", "no"}
    metrics = httpx.get(f"{server}/metrics").text
    calls = next(float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith('adaptlab_batch_size_count{kind="classify"}'))
    assert calls < 192  # same-adapter requests were batched together


ABUSE = [
    # (method, path, request kwargs, status, error code)
    ("post", "/v1/classify", {"json": {"model": "ghost", "input": "x"}}, 404, "model_not_found"),
    ("post", "/v1/classify", {"json": {"model": "../lean0", "input": "x"}}, 400, "invalid_model_name"),
    ("post", "/v1/classify", {"json": {"model": "a/b", "input": "x"}}, 400, "invalid_model_name"),
    ("post", "/v1/classify", {"json": {"model": "..", "input": "x"}}, 400, "invalid_model_name"),
    ("post", "/v1/classify", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
     "invalid_json"),
    ("post", "/v1/classify", {"content": b"\xff\xfe\x00garbage"}, 400, "invalid_json"),
    ("post", "/v1/classify", {"content": b"[1, 2, 3]"}, 422, "invalid_request"),
    ("post", "/v1/classify", {"content": b"x" * 200_000}, 413, "body_too_large"),
    ("post", "/v1/completions", {"json": {"model": "base", "prompt": "x", "max_tokens": 10**12}}, 400,
     "wrong_endpoint"),
    ("post", "/v1/admin/adapters", {"json": {"name": "x", "path": "/etc"}}, 401, "invalid_api_key"),
    ("post", "/v1/admin/adapters", {"json": {"name": "x", "path": "/etc"}, "headers": {"x-api-key": "guess"}}, 401,
     "invalid_api_key"),
    ("post", "/v1/admin/adapters", {"json": {"name": "x", "path": "/etc"},
                                    "headers": {"authorization": f"Bearer {KEY}"}}, 403, "invalid_adapter"),
    ("post", "/v1/admin/adapters", {"json": {"name": "x", "path": "../../../../etc"},
                                    "headers": {"authorization": f"Bearer {KEY}"}}, 403, "invalid_adapter"),
    ("delete", "/v1/admin/adapters/lean0", {}, 401, "invalid_api_key"),
    ("delete", "/v1/admin/adapters/..%2F..%2Fetc", {"headers": {"authorization": f"Bearer {KEY}"}}, None, None),
    ("get", "/v1/classify", {}, 405, None),
    ("get", "/../../etc/passwd", {}, 404, None),
]


@pytest.mark.parametrize("method, path, kwargs, status, code", ABUSE, ids=[f"{a[1]}-{a[3]}" for a in ABUSE])
def test_abuse_gets_a_json_error_and_the_server_keeps_serving(server, method, path, kwargs, status, code):
    with httpx.Client(base_url=server, timeout=30) as c:
        r = c.request(method.upper(), path, **kwargs)
        if status is not None:
            assert_error(r, status, code)
        else:
            assert 400 <= r.status_code < 500 and "error" in r.json()
        assert c.get("/healthz").json()["status"] == "ok"
        ok = c.post("/v1/classify", json={"model": "lean1", "input": "still here"})
        assert ok.status_code == 200 and ok.json()["data"][0]["label"] == "LABEL_1"


def test_huge_max_tokens_is_refused_by_limit():
    from adaptlab.serving.app import create_app

    engine = FakeEngine()
    engine.adapters = lambda: [_gen_info()]
    with live_server(create_app(engine, ServerSettings(max_tokens=64))) as url:
        r = httpx.post(f"{url}/v1/completions", json={"model": "base", "prompt": "x", "max_tokens": 10**12},
                       timeout=10)
        assert_error(r, 400, "max_tokens_exceeded")
        stream = httpx.post(f"{url}/v1/completions", json={"model": "base", "prompt": "x", "stream": True},
                            timeout=10)
        events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and [json.loads(e)["choices"][0]["text"] for e in events[:-1]] == ["base0",
                                                                                                          "base1"]


def _gen_info():
    from adaptlab.serving.engine import AdapterInfo

    return AdapterInfo("base", "generation", "base")


def test_full_queue_answers_429_and_slow_requests_504():
    from adaptlab.serving.app import create_app

    engine = FakeEngine(delay=0.4)
    settings = ServerSettings(max_queue=1, max_batch_size=1, max_wait_ms=0, timeout_s=3)
    with live_server(create_app(engine, settings)) as url:
        def one(i: int) -> httpx.Response:
            return httpx.post(f"{url}/v1/classify", json={"model": "a", "input": f"t{i}"}, timeout=30)

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(one, range(8)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
        refused = next(r for r in responses if r.status_code == 429)
        assert_error(refused, 429, "queue_full")
        assert refused.headers["retry-after"] == "1"
        assert httpx.get(f"{url}/healthz").status_code == 200

    with live_server(create_app(FakeEngine(delay=0.5), ServerSettings(timeout_s=0.1))) as url:
        assert_error(httpx.post(f"{url}/v1/classify", json={"model": "a", "input": "x"}, timeout=10), 504, "timeout")
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_chunked_body_over_the_limit_is_cut_off(server):
    """No Content-Length to check up front: the body is counted as it arrives."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(server)
    chunk = b"x" * 50_000
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        reply = b""
        while b"}}" not in reply:  # headers and the JSON body may come in separate packets
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413") and '"body_too_large"' in reply
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"
