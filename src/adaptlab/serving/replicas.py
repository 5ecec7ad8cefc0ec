"""``adaptlab serve --replicas N``: the same app on N Ray Serve replicas, behind one front that retries.

    adaptlab serve --base minilm --adapter rt=runs/rt/lora --adapter probe=runs/rt/linear_probe --replicas 2

Each replica (:class:`EngineReplica`, a Ray Serve deployment) loads the base and every adapter and runs the very
app of ``adaptlab serve`` (:func:`~adaptlab.serving.app.create_app`: the same routers, limits, JSON errors,
metrics) on its own engine worker. The front (:class:`ReplicaFront`, a small ASGI app on uvicorn in the
``adaptlab serve`` process, on the socket the single-process server would use) does not parse requests: it reads
the body (413 over the limit), hands the raw request to the deployment handle, which routes it to the replica with
the shortest queue (Ray Serve's power-of-two-choices router), and writes back what the replica's app answered,
with an ``X-Adaptlab-Replica`` header naming the replica.

Losing a replica: Ray Serve restarts a replica that dies or fails its health check (its engine worker stopped),
but fails the requests that were in flight on it. Inference requests are idempotent (same model, same input,
same answer: greedy decoding, or a request's own seed), so the front retries them on another replica as long as
nothing of the answer was sent yet: plain JSON answers are buffered whole, so they are always retried; a stream
(``"stream": true``) is retried until its first event, and cut off later by a last error event and ``[DONE]``.
The admin routes (load or unload an adapter at run time) would change one replica only, so they answer 501 with
replicas: give every adapter with ``--adapter`` at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from adaptlab.errors import UserError
from adaptlab.serving.http import error_body, error_response
from adaptlab.serving.settings import ServerSettings

log = logging.getLogger("adaptlab.serving.replicas")

APP_NAME = "adaptlab"
DEPLOYMENT = "EngineReplica"
REPLICA_HEADER = "x-adaptlab-replica"
#: Environment variables the replicas get from the ``adaptlab serve`` process (model cache, offline switches), by
#: prefix; never credentials (HF_TOKEN and the like, see :data:`SECRET_ENV`), which a joined cluster would store.
FORWARDED_ENV = ("ADAPTLAB_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_NUM_THREADS")
SECRET_ENV = ("TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIAL")
_SCOPE_KEYS = ("type", "http_version", "method", "scheme", "path", "raw_path", "query_string", "root_path",
               "headers", "client", "server")


class EngineReplica:
    """One replica: the engine (base and adapters) and the app of ``adaptlab serve`` over it.

    ``config`` is plain JSON (base, ``[name, path]`` pairs, device, threads, settings): adapters are resolved and
    checked here again, as ``adaptlab serve`` checks them, and loaded from their folders (safetensors).
    """

    async def __init__(self, config: dict[str, Any]):
        from ray import serve

        from adaptlab.serving.adapters import resolve_adapter
        from adaptlab.serving.app import create_app
        from adaptlab.serving.transformers_engine import load_engine

        settings = ServerSettings(**config["settings"])
        specs = [resolve_adapter(name, path) for name, path in config["adapters"]]
        engine = load_engine(config["base"], specs, device=config["device"], threads=config["threads"])
        self.app = create_app(engine, settings)
        self.batcher = self.app.state.batcher
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # what uvicorn does at start: the engine worker starts

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose engine worker stopped is replaced."""
        thread = self.batcher._thread
        if thread is None or not thread.is_alive():
            raise RuntimeError("the engine worker stopped")

    async def __call__(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Run one HTTP request (``{"scope", "body"}``) through the app; yield the ASGI messages it sends."""
        messages: asyncio.Queue = asyncio.Queue()
        gone = asyncio.Event()
        pending = [{"type": "http.request", "body": request["body"], "more_body": False}]

        async def receive() -> dict:
            if pending:
                return pending.pop()
            await gone.wait()  # after the body: a disconnect, once the front stopped listening
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (REPLICA_HEADER.encode(), self.replica.encode())]
                message = {**message, "headers": headers}
            await messages.put(message)

        async def run() -> None:
            try:
                await self.app(dict(request["scope"]), receive, send)
            finally:
                await messages.put(None)

        task = asyncio.create_task(run())
        try:
            while (message := await messages.get()) is not None:
                yield message
        finally:
            gone.set()
            if not task.done():
                task.cancel()


# -- the front -------------------------------------------------------------------------------------------------


def _retryable() -> tuple[type[BaseException], ...]:
    """What a replica lost (killed, restarting, unreachable) raises through a deployment handle."""
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    return RayActorError, ReplicaUnavailableError, DeploymentUnavailableError


class ReplicaLost(Exception):
    """A replica went away after part of a streamed answer was sent: that answer can't be retried."""


class ReplicaFront:
    """ASGI app of the ``adaptlab serve`` process with replicas: body limit, admin refusal, routing, retries."""

    def __init__(self, handle: Any, settings: ServerSettings, attempts: int = 5, backoff_s: float = 0.2):
        self.handle = handle.options(stream=True)
        self.settings, self.attempts, self.backoff_s = settings, attempts, backoff_s
        self.retried = 0  # requests sent again after their replica was lost (for tests and logs)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        limit = self.settings.max_body_bytes
        try:
            body = await _read_body(receive, limit)
        except _ClientGone:
            return
        if body is None:
            await error_response(413, f"request body is larger than the server limit of {limit} bytes.",
                                 "body_too_large")(scope, receive, send)
            return
        if scope.get("path", "").startswith("/v1/admin/"):
            await error_response(501, "loading or unloading adapters at run time is not supported with --replicas "
                                      "(it would change one replica only); give every adapter with --adapter when "
                                      "starting the server.", "admin_not_replicated")(scope, receive, send)
            return
        request = {"scope": {k: scope[k] for k in _SCOPE_KEYS if k in scope}, "body": body}
        await _unless_client_leaves(self.forward(request, send), receive)

    async def forward(self, request: dict, send: Any) -> None:
        """Send ``request`` to a replica and its answer to the client, again to another replica if it was lost
        before any of the answer went out (503 once every attempt failed)."""
        errors = _retryable()
        for attempt in range(self.attempts):
            try:
                await self._once(request, send)
                return
            except ReplicaLost:
                return
            except errors as e:
                log.warning("replica lost (%s); retrying (attempt %d of %d)", type(e).__name__, attempt + 2,
                            self.attempts)
                self.retried += 1
                await asyncio.sleep(self.backoff_s * 2 ** attempt)
            except Exception as e:  # not a lost replica: the request's own failure, said once, not retried
                log.exception("replica call failed")
                await error_response(500, f"internal error: {type(e).__name__}", "internal_error")(
                    request["scope"], None, send)
                return
        await error_response(503, f"no replica answered after {self.attempts} attempts; try again shortly.",
                             "replica_unavailable", headers={"Retry-After": "1"})(request["scope"], None, send)

    async def _once(self, request: dict, send: Any) -> None:
        """One attempt. JSON answers are held until complete; a stream goes out from its first event on."""
        held: list[dict] = []
        streaming = sent = False
        response = self.handle.remote(request)
        try:
            async for message in response:
                if message["type"] == "http.response.start":
                    streaming = _is_stream(message)
                held.append(message)
                if streaming and message["type"] == "http.response.body" and message.get("body"):
                    for m in held:
                        await send(m)
                    held, sent = [], True
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    break  # the answer is whole: nothing more to wait for
        except Exception as e:
            if not sent:
                raise
            log.warning("replica failed in the middle of a stream (%s); ending it with an error event", e)
            event = error_body(503, "the replica serving this stream was lost; send the request again.",
                               "replica_lost")
            tail = f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode()
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            raise ReplicaLost from None
        finally:
            response.cancel()
        await _flush(held, send)


async def _unless_client_leaves(work: Coroutine[Any, Any, None], receive: Any) -> None:
    """Run ``work`` (forwarding one request) until it ends or the client disconnects. A disconnect cancels it, and
    with it the replica's call (the handle's response is cancelled), so no replica generates for nobody."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            log.info("the connection closed before the answer was complete; the request was cancelled")
    with contextlib.suppress(asyncio.CancelledError):
        await task  # its own failure, if any, is raised here


async def _disconnect(receive: Any) -> None:
    """Returns once the client disconnected (the server says so after the request body, when the client leaves or
    the answer is complete). A server that fails to say (receive raises) never cuts the request short."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - whatever the server raised, the request itself goes on
        log.debug("could not watch the connection", exc_info=True)
        await asyncio.Event().wait()  # until cancelled with the request


async def _flush(held: list[dict], send: Any) -> None:
    """Send a complete answer the replica gave. Its start may go out before a send fails (the client left): that
    is the client's doing, so it is logged, never answered with a second response or retried on a replica."""
    try:
        for m in held:
            await send(m)
    except Exception as e:  # noqa: BLE001 - whatever the server raises for a closed connection
        log.info("the client left while its answer was being sent (%s)", e)


def _is_stream(start: dict) -> bool:
    headers = dict(start.get("headers") or [])
    return headers.get(b"content-type", b"").startswith(b"text/event-stream")


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body, or None once it passes ``limit`` bytes (_ClientGone if the client left)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- starting and stopping -------------------------------------------------------------------------------------


def replica_config(base: str, adapters: list[tuple[str, Any]], settings: ServerSettings, device: str = "cpu",
                   threads: int | None = None) -> dict[str, Any]:
    """What every replica is built from: plain JSON, no pickled objects or files."""
    return {"base": base, "adapters": [[name, str(path)] for name, path in adapters], "device": device,
            "threads": threads, "settings": settings.model_dump(mode="json")}


def start_ray(cpus_needed: float) -> bool:
    """Connect to the Ray cluster at ``RAY_ADDRESS``, or start a local one (sized to fit the replicas); True when
    this call started it. UserError when Ray Serve is not installed."""
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError:
        raise UserError("--replicas needs Ray Serve: pip install 'ray[serve]>=2.60,<3' (or use --replicas 1)."
                        ) from None
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items()
           if k.startswith(FORWARDED_ENV) and not any(word in k.upper() for word in SECRET_ENV)}
    address = os.environ.get("RAY_ADDRESS")
    local = {} if address else {"num_cpus": max(os.cpu_count() or 1, math.ceil(cpus_needed)),
                                "include_dashboard": False}
    ray.init(address=address or "local", runtime_env={"env_vars": env}, logging_level=logging.WARNING,
             log_to_driver=False, **local)
    return True


def replica_device(device: str, gpus: float) -> str:
    """The device of each replica: ``auto`` is cuda when the replicas reserve GPUs, cpu otherwise (Ray shows a
    replica only the GPUs it reserved). UserError for cuda without GPUs reserved."""
    if device == "auto":
        return "cuda" if gpus > 0 else "cpu"
    if device.startswith("cuda") and gpus <= 0:
        raise UserError("--device cuda with --replicas: reserve GPUs for each replica with --replica-gpus (1 for a "
                        "GPU each, 0.5 for two replicas on a GPU).")
    return device


def check_resources(replicas: int, resources: dict[str, float], strict: bool) -> None:
    """UserError (``strict``: a cluster started here, which won't grow) or a warning (a cluster joined, which may
    autoscale) when the cluster has fewer CPUs or GPUs than the replicas reserve: they would wait for them."""
    import ray

    have = ray.cluster_resources()
    for key, flag in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        need = replicas * resources.get(key, 0)
        if need > have.get(flag, 0) + 1e-9:
            message = (f"{replicas} replicas reserving {resources.get(key)} {flag} each need {need:g} {flag}s; "
                       f"the Ray cluster has {have.get(flag, 0):g}. Lower --replicas or "
                       f"--replica-{flag.lower()}s, or join a larger cluster (RAY_ADDRESS).")
            if strict:
                raise UserError(message)
            log.warning(message)


def deploy(config: dict[str, Any], replicas: int, resources: dict[str, float] | None = None,
           health_check_s: float = 2.0) -> Any:
    """Deploy ``replicas`` replicas of the app built from ``config``, each reserving ``resources`` (Ray's
    ``num_cpus``, ``num_gpus``); returns the deployment handle once every replica runs. UserError when they can't
    start (e.g. an adapter fails to load)."""
    from ray import serve

    if replicas < 1:
        raise UserError(f"--replicas {replicas}: give 1 (one process, no Ray) or more.")
    serve.start(proxy_location="Disabled")  # no Ray HTTP proxy: the front of `adaptlab serve` takes the traffic
    deployment = serve.deployment(EngineReplica).options(
        name=DEPLOYMENT, num_replicas=replicas, ray_actor_options=resources or {"num_cpus": 1.0},
        max_ongoing_requests=config["settings"]["max_queue"], health_check_period_s=health_check_s,
        health_check_timeout_s=max(30.0, health_check_s), graceful_shutdown_timeout_s=5)
    try:
        return serve.run(deployment.bind(config), name=APP_NAME, route_prefix=None)
    except RuntimeError as e:
        raise UserError(f"the replicas did not start: {str(e).strip()[-2000:]}") from None


def replica_actors() -> dict[str, Any]:
    """The live replicas' actors by replica id (what their ``X-Adaptlab-Replica`` header says), from the named
    actors Ray Serve keeps in its namespace. For tests and operators: ``ray.kill(replica_actors()[id])``."""
    import ray

    prefix = f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT}#"
    actors = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith(prefix):
            with contextlib.suppress(ValueError):  # it died between the listing and now
                actors[entry["name"][len(prefix):]] = ray.get_actor(entry["name"], namespace=entry["namespace"])
    return actors


def wait_for_replicas(replicas: int, timeout_s: float = 120) -> bool:
    """Wait until ``replicas`` replicas are running (after one was lost: restarted); False on timeout."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get(APP_NAME)
        if app is not None:
            states = app.deployments[DEPLOYMENT].replica_states
            if states.get("RUNNING", 0) == replicas and sum(states.values()) == replicas:
                return True
        time.sleep(0.5)
    return False


def stop(shutdown_ray: bool = False) -> None:
    """Stop the replicas. ``shutdown_ray`` (the cluster was started here): Serve and Ray shut down; otherwise only
    this app is deleted, so that other Serve apps of a joined cluster keep running."""
    import ray
    from ray import serve

    try:
        if shutdown_ray:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    except Exception:  # noqa: BLE001 - shutting down: nothing more to do about it
        log.warning("Ray Serve did not shut down cleanly", exc_info=True)
    if shutdown_ray:
        ray.shutdown()
