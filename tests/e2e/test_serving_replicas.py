"""``adaptlab serve --replicas 2`` on Ray Serve, on CPU: the same answers as one process, both replicas serving,
the same limits and errors, and a replica killed under load losing and mixing up nothing.

One Ray Serve app (2 replicas of tiny-random-bert with three adapters, half a CPU each) is shared by the module;
it takes about 20 s to start on 2 cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tests.e2e.test_serving import (
    TEXTS,
    assert_error,
    bert_engine,
    lean_adapters,  # noqa: F401  (a fixture)
    live_server,
)

from adaptlab.serving.replicas import REPLICA_HEADER
from adaptlab.serving.settings import ServerSettings

pytest.importorskip("ray.serve")

KEY = "s3cret"
NAMES = ["lean0", "lean1", "three", "base"]
ZERO_SHOT = {"yes": "a great film", "no": "an awful film"}


def body(name: str, i: int, long: bool = False) -> dict:
    """Request ``i`` for ``name``: two short texts, or (``long``) eight texts of 512 tokens, which keep a replica
    busy long enough for a kill to catch requests in flight."""
    if long:
        texts = [" ".join([TEXTS[(i + j) % len(TEXTS)]] * 40) for j in range(8)]
    else:
        texts = [TEXTS[i % len(TEXTS)], TEXTS[(i + 1) % len(TEXTS)]]
    b = {"model": name, "input": texts}
    if name == "base":
        b["labels"] = ZERO_SHOT
    return b


def settings(lean_adapters) -> ServerSettings:  # noqa: F811
    return ServerSettings(api_key=KEY, max_wait_ms=10, max_body_bytes=100_000, max_inputs=8,
                          adapter_roots=[next(iter(lean_adapters.values())).parent])


@pytest.fixture(scope="module")
def expected(lean_adapters) -> dict[tuple[str, int], list[dict]]:  # noqa: F811
    """Every (model, request) answered by one process (the app of ``adaptlab serve`` without replicas)."""
    from fastapi.testclient import TestClient

    from adaptlab.serving.app import create_app

    with TestClient(create_app(bert_engine(lean_adapters), settings(lean_adapters))) as client:
        return {(name, i, long): client.post("/v1/classify", json=body(name, i, long)).json()["data"]
                for name in NAMES for i in range(len(TEXTS)) for long in (False, True)}


@pytest.fixture(scope="module")
def replicated(lean_adapters):  # noqa: F811
    """(url, front): 2 replicas on a local Ray cluster of 2 CPUs, behind the front on uvicorn."""
    from adaptlab.serving import replicas as rs

    started = rs.start_ray(1.0)
    try:
        config = rs.replica_config("tiny-random-bert", list(lean_adapters.items()), settings(lean_adapters),
                                   device="cpu", threads=1)
        handle = rs.deploy(config, 2, {"num_cpus": 0.5}, health_check_s=1.0)
        front = rs.ReplicaFront(handle, settings(lean_adapters))
        with live_server(front) as url:
            yield url, front
    finally:
        rs.stop(shutdown_ray=started)


def check(name: str, i: int, response: httpx.Response, expected: dict, long: bool = False) -> None:
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["model"] == name
    for d, want in zip(got["data"], expected[(name, i, long)], strict=True):
        assert d["label"] == want["label"]
        assert set(d["scores"]) == set(want["scores"])
        assert max(abs(d["scores"][k] - v) for k, v in want["scores"].items()) < 1e-5


class EndlessReplica:
    """A deployment handle whose replica never finishes its answer (a long generation); it counts the messages it
    sent and whether its call was cancelled."""

    def __init__(self):
        self.sent, self.cancelled = 0, False

    def options(self, **_):
        return self

    def remote(self, request):
        return self

    def cancel(self):
        self.cancelled = True

    def __aiter__(self):
        return self._messages()

    async def _messages(self):
        yield {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
        while True:
            await asyncio.sleep(0.02)
            self.sent += 1
            yield {"type": "http.response.body", "body": b" ", "more_body": True}


def test_a_client_that_leaves_cancels_its_call_on_the_replica(lean_adapters):  # noqa: F811
    from adaptlab.serving.replicas import ReplicaFront

    replica = EndlessReplica()
    with live_server(ReplicaFront(replica, settings(lean_adapters))) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/classify", json=body("lean0", 0), timeout=0.5)
        deadline = time.monotonic() + 10
        while not replica.cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert replica.cancelled  # the front noticed the client leave and cancelled the replica's call
        seen = replica.sent
        time.sleep(0.3)
        assert 0 < replica.sent == seen  # and nothing more was asked of it


@pytest.mark.slow  # a second Ray cluster from scratch (80-160 s); the tests below cover the same app on one cluster
def test_cli_serves_on_two_replicas_and_leaves_no_process_behind(lean_adapters, expected, tmp_path):  # noqa: F811
    """``adaptlab serve --replicas 2`` end to end: starts its own Ray, answers, and stops it all on SIGTERM."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = [arg for name, path in lean_adapters.items() for arg in ("--adapter", f"{name}={path}")]
    log = (tmp_path / "serve.log").open("w")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "adaptlab", "serve", "--base", "tiny-random-bert", *flags,
                             "--port", str(port), "--device", "cpu", "--replicas", "2", "--replica-cpus", "0.5"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url, children = f"http://127.0.0.1:{port}", []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        children = psutil.Process(proc.pid).children(recursive=True)
        seen = set()
        for i in range(16):
            name = NAMES[i % len(NAMES)]
            r = httpx.post(f"{url}/v1/classify", json=body(name, i), timeout=60)
            check(name, i % len(TEXTS), r, expected)
            seen.add(r.headers[REPLICA_HEADER])
        assert len(seen) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        _, alive = psutil.wait_procs(children, timeout=30)
        for p in alive:  # leave nothing behind, then say so
            with contextlib.suppress(psutil.Error):
                p.kill()
    assert not alive, f"left behind: {[p.pid for p in alive]}"
    assert code in (0, 15, -15), (tmp_path / "serve.log").read_text()[-3000:]  # 15: Ray's SIGTERM exit status


def test_replicas_answer_as_one_process_and_share_the_load(replicated, expected):
    from adaptlab.serving.replicas import replica_actors

    url, _ = replicated

    def one(i: int) -> tuple[str, int, httpx.Response]:
        name = NAMES[i % len(NAMES)]
        return name, i % len(TEXTS), httpx.post(f"{url}/v1/classify", json=body(name, i), timeout=60)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(96)))
    for name, i, response in results:
        check(name, i, response, expected)
    answered = {r.headers[REPLICA_HEADER] for _, _, r in results}
    assert answered == set(replica_actors()) and len(answered) == 2


def test_options_and_errors_apply_in_every_replica(replicated):
    url, _ = replicated
    with httpx.Client(base_url=url, timeout=30) as c:
        assert_error(c.post("/v1/classify", json={"model": "../lean0", "input": "x"}), 400, "invalid_model_name")
        assert_error(c.post("/v1/classify", json={"model": "ghost", "input": "x"}), 404, "model_not_found")
        assert_error(c.post("/v1/classify", json={"model": "lean0", "input": ["x"] * 9}), 400, "too_many_inputs")
        assert_error(c.post("/v1/classify", content=b"{not json"), 400, "invalid_json")
        assert_error(c.post("/v1/classify", content=b"x" * 200_000), 413, "body_too_large")
        assert_error(c.post("/v1/completions", json={"model": "lean0", "prompt": "x"}), 400, "wrong_endpoint")
        assert_error(c.get("/v1/classify"), 405)
        assert_error(c.post("/v1/admin/adapters", json={"name": "x", "path": "/etc"},
                            headers={"authorization": f"Bearer {KEY}"}), 501, "admin_not_replicated")
        models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert set(models) == {"base", "lean0", "lean1", "three"} and models["lean0"]["source"] is None
        admin = {m["id"]: m for m in c.get("/v1/models", headers={"x-api-key": KEY}).json()["data"]}
        assert admin["lean0"]["source"]  # the key is checked in the replica, as in one process
        health = c.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok" and REPLICA_HEADER in health.headers
        assert "adaptlab_http_requests_total" in c.get("/metrics").text


def test_a_replica_killed_under_load_loses_and_mixes_up_nothing(replicated, expected):
    import ray

    from adaptlab.serving.replicas import replica_actors, wait_for_replicas

    url, front = replicated
    before = replica_actors()
    victim = sorted(before)[0]
    done, results = threading.Event(), []

    def one(i: int) -> tuple[str, int, httpx.Response]:
        name = NAMES[i % len(NAMES)]
        response = httpx.post(f"{url}/v1/classify", json=body(name, i, long=True), timeout=120)
        if len(results) >= 24:
            done.set()
        results.append(response)
        return name, i % len(TEXTS), response

    retried = front.retried
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(one, i) for i in range(160)]
        assert done.wait(120), "the load did not get going"
        ray.kill(before[victim], no_restart=True)  # what a crashed replica process looks like to Ray Serve
        killed_at = time.monotonic()
        answers = [f.result() for f in futures]
    for name, i, response in answers:
        check(name, i, response, expected, long=True)
    served_by = {r.headers[REPLICA_HEADER] for _, _, r in answers}
    assert victim in served_by and len(served_by) >= 2
    assert wait_for_replicas(2, timeout_s=120), "the killed replica was not replaced"
    after = replica_actors()
    assert len(after) == 2 and victim not in after
    print(f"\n{len(answers)} answers all right; {front.retried - retried} requests retried after the kill; "
          f"2 replicas running again {time.monotonic() - killed_at:.1f} s after it")
    t0 = time.monotonic()
    check("lean1", 0, httpx.post(f"{url}/v1/classify", json=body("lean1", 0), timeout=60), expected)
    assert time.monotonic() - t0 < 30
