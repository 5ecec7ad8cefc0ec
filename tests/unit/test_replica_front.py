"""The front of ``adaptlab serve --replicas N`` without Ray: a fake deployment handle whose replicas die on cue.

What is checked: a request whose replica is lost before any of its answer went out is sent again (the same
request), a stream cut after its first event ends with an error event and ``[DONE]``, every attempt failing is a
JSON 503, and the body limit and the admin refusal are answered by the front itself. Plus the CLI's errors for
``--replicas 0`` and a missing Ray.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest

pytest.importorskip("ray")

from ray.exceptions import ActorDiedError  # noqa: E402
from ray.serve.exceptions import ReplicaUnavailableError  # noqa: E402

from adaptlab.errors import UserError  # noqa: E402
from adaptlab.serving.replicas import ReplicaFront  # noqa: E402
from adaptlab.serving.settings import ServerSettings  # noqa: E402

JSON_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
SSE_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}


def body(data: bytes, more: bool = False) -> dict:
    return {"type": "http.response.body", "body": data, "more_body": more}


class Reply:
    """What one call of the fake handle streams back: ``messages``, then ``error`` (if any)."""

    def __init__(self, messages: list[dict], error: BaseException | None = None):
        self.messages, self.error, self.cancelled = messages, error, False

    async def _stream(self):
        for m in self.messages:
            await asyncio.sleep(0)
            yield m
        if self.error is not None:
            raise self.error

    def __aiter__(self):
        return self._stream()

    def cancel(self) -> None:
        self.cancelled = True


class FakeHandle:
    def __init__(self, *replies: Reply):
        self.replies, self.requests = list(replies), []

    def options(self, **_kwargs):
        return self

    def remote(self, request: dict) -> Reply:
        self.requests.append(request)
        return self.replies.pop(0)


def call(front: ReplicaFront, method: str, path: str, **kwargs) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=front)
        async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def front(*replies: Reply, **settings) -> tuple[ReplicaFront, FakeHandle]:
    handle = FakeHandle(*replies)
    return ReplicaFront(handle, ServerSettings(**settings), attempts=3, backoff_s=0), handle


def test_a_request_whose_replica_is_lost_is_sent_again_until_one_answers():
    ok = Reply([JSON_START, body(b'{"model": "a"}')])
    f, handle = front(Reply([], ActorDiedError()), Reply([JSON_START], ReplicaUnavailableError("r1")), ok)
    r = call(f, "POST", "/v1/classify?x=1", json={"model": "a", "input": "hi"})
    assert r.status_code == 200 and r.json() == {"model": "a"}
    assert f.retried == 2 and len(handle.requests) == 3 and ok.cancelled
    first = handle.requests[0]
    assert all(req == first for req in handle.requests)  # the very same request each time
    assert json.loads(first["body"]) == {"model": "a", "input": "hi"}
    assert first["scope"]["path"] == "/v1/classify" and first["scope"]["query_string"] == b"x=1"
    assert set(first["scope"]) <= {"type", "http_version", "method", "scheme", "path", "raw_path", "query_string",
                                   "root_path", "headers", "client", "server"}  # plain data, nothing of the server


def test_a_stream_lost_before_its_first_event_is_retried_and_after_it_is_ended_with_an_error_event():
    events = [b'data: {"choices": [{"text": "a"}]}\n\n', b"data: [DONE]\n\n"]
    whole = Reply([SSE_START, body(events[0], True), body(events[1])])
    f, handle = front(Reply([SSE_START], ActorDiedError()), whole)
    r = call(f, "POST", "/v1/completions", json={"model": "g", "prompt": "x", "stream": True})
    assert r.status_code == 200 and r.content == b"".join(events) and len(handle.requests) == 2

    f, handle = front(Reply([SSE_START, body(events[0], True)], ActorDiedError()))
    r = call(f, "POST", "/v1/completions", json={"model": "g", "prompt": "x", "stream": True})
    lines = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert r.status_code == 200 and len(handle.requests) == 1  # part of it went out: not sent again
    assert json.loads(lines[0])["choices"][0]["text"] == "a"
    assert json.loads(lines[1])["error"]["code"] == "replica_lost" and lines[2] == "[DONE]"


def test_every_attempt_failing_is_a_json_503():
    f, handle = front(*(Reply([], ActorDiedError()) for _ in range(3)))
    r = call(f, "POST", "/v1/classify", json={"model": "a", "input": "x"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "replica_unavailable" and len(handle.requests) == 3


def test_a_failure_that_is_not_a_lost_replica_is_a_json_500_and_not_retried():
    f, handle = front(Reply([], ValueError("bad")), Reply([JSON_START, body(b"{}")]))
    r = call(f, "POST", "/v1/classify", json={"model": "a", "input": "x"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error" and len(handle.requests) == 1


def test_body_limit_and_admin_refusal_are_answered_by_the_front():
    f, handle = front(max_body_bytes=100)
    r = call(f, "POST", "/v1/classify", content=b"x" * 101)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = call(f, "POST", "/v1/admin/adapters", json={"name": "x", "path": "/tmp"})
    assert r.status_code == 501 and r.json()["error"]["code"] == "admin_not_replicated"
    r = call(f, "DELETE", "/v1/admin/adapters/x")
    assert r.status_code == 501 and not handle.requests


def test_replicas_below_one_and_a_missing_ray_are_user_errors(monkeypatch, capsys):
    from adaptlab import cli
    from adaptlab.serving import replicas

    monkeypatch.setattr(sys, "argv", ["adaptlab", "serve", "--base", "tiny-random-bert", "--replicas", "0"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "--replicas 0: give 1" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as without Ray installed
    with pytest.raises(UserError, match=r"pip install 'ray\[serve\]"):
        replicas.start_ray(1)


def test_replica_device_follows_the_gpus_reserved():
    from adaptlab.serving.replicas import replica_device

    assert replica_device("auto", 0) == "cpu" and replica_device("auto", 0.5) == "cuda"
    assert replica_device("cpu", 1) == "cpu" and replica_device("cuda", 1) == "cuda"
    with pytest.raises(UserError, match="--replica-gpus"):
        replica_device("cuda", 0)


def test_a_client_gone_while_its_answer_is_sent_gets_no_second_response():
    """The replica answered; the client's connection fails after the start went out: no 500 after it, no retry."""
    f, handle = front(Reply([JSON_START, body(b'{"model": "a"}')]))
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            raise OSError("connection closed")

    scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/v1/classify",
             "raw_path": b"/v1/classify", "query_string": b"", "root_path": "", "headers": [], "client": None,
             "server": None}
    messages = [{"type": "http.request", "body": b'{"model": "a", "input": "hi"}', "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    asyncio.run(f(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]  # one response, not two
    assert len(handle.requests) == 1
