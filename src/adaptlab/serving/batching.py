"""Micro-batching in front of the engine: a bounded queue and one worker thread.

HTTP handlers (asyncio) submit jobs; the worker takes the oldest job and every other waiting job for the same
adapter and kind (up to ``max_batch_size`` inputs, waiting at most ``max_wait_ms`` for more), runs them as one
engine call and hands each job its own results. A batch that fails is run again one request at a time, so a
bad request fails alone and never takes the others of its batch down. Admin calls (load/unload) and the steps of
a request that read the engine (a chat's prompt) run on the same thread, in order, so the engine never sees two
things at once. A full queue raises :class:`QueueFull` (HTTP 429; never for admin calls); a job whose request timed
out or went away is skipped, or dropped from a running generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from adaptlab.serving.engine import ClassifyItem, Engine, GenerationParams

_DONE = object()
#: Job kinds answered whole by one engine call per batch -> the engine method that answers them.
ANSWERED = {"classify": "classify", "ner": "ner", "embed": "embed"}


class QueueFull(Exception):
    """The server has ``max_queue`` requests waiting already."""


class RequestTimeout(Exception):
    """A request waited or ran longer than the server's per-request timeout."""


@dataclass
class Job:
    kind: str  # "classify" | "ner" | "generate" | "call"
    adapter: str
    payload: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future | None = None
    stream: asyncio.Queue | None = None
    params: list[GenerationParams] = field(default_factory=list)
    cancelled: bool = False
    admin: bool = False  # an admin call: never refused for a full queue
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return 1 if self.kind == "call" else len(self.payload)

    def resolve(self, result: Any = None, error: BaseException | None = None) -> None:
        def _set() -> None:
            if self.future is None or self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(_set)

    def push(self, item: Any) -> None:
        assert self.stream is not None
        self.loop.call_soon_threadsafe(self.stream.put_nowait, item)


class Batcher:
    """Bounded queue + worker thread over an :class:`~adaptlab.serving.engine.Engine`."""

    def __init__(self, engine: Engine, *, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_queue: int = 256,
                 on_batch: Callable[[str, int], None] | None = None):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda _kind, _n: None)
        self._queue: list[Job] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._work, name="adaptlab-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    # -- submitting (from the event loop) ----------------------------------------------------------------------
    def _submit(self, job: Job) -> None:
        with self._cond:
            if not job.admin and len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting (server limit {self.max_queue}); "
                                "retry later.")
            self._queue.append(job)
            self._cond.notify_all()

    async def _wait(self, job: Job, timeout: float) -> Any:
        assert job.future is not None
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            job.cancelled = True
            raise RequestTimeout(f"the request took longer than the server's timeout ({timeout:g} s).") from None
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    async def classify(self, adapter: str, items: list[ClassifyItem], timeout: float) -> list:
        return await self._answer("classify", adapter, items, timeout)

    async def ner(self, adapter: str, texts: list[str], timeout: float) -> list:
        """Per text, the entities the engine's ``ner`` finds with ``adapter``."""
        return await self._answer("ner", adapter, texts, timeout)

    async def embed(self, adapter: str, texts: list[str], timeout: float) -> list:
        """Per text, its embedding (:class:`~adaptlab.serving.engine.Embedding`) through ``adapter``."""
        return await self._answer("embed", adapter, texts, timeout)

    async def _answer(self, kind: str, adapter: str, items: list, timeout: float) -> list:
        loop = asyncio.get_running_loop()
        job = Job(kind, adapter, items, loop, future=loop.create_future())
        self._submit(job)
        return await self._wait(job, timeout)

    async def call(self, fn: Callable[[], Any], timeout: float, admin: bool = True) -> Any:
        """Run ``fn`` on the worker thread, in queue order: an admin operation, or (``admin=False``) a request's own
        step that reads the engine, refused with :class:`QueueFull` like any request when the queue is full."""
        loop = asyncio.get_running_loop()
        job = Job("call", "", fn, loop, future=loop.create_future(), admin=admin)
        self._submit(job)
        return await self._wait(job, timeout)

    async def generate(self, adapter: str, prompts: list[str], params: list[GenerationParams],
                       timeout: float, server_timeout: float | None = None) -> AsyncIterator[list]:
        """Chunks for these prompts as the worker produces them; RequestTimeout past ``timeout`` in total (what is
        left of the request's ``server_timeout``, which the message names, when a step came before)."""
        said = server_timeout or timeout
        loop = asyncio.get_running_loop()
        job = Job("generate", adapter, prompts, loop, stream=asyncio.Queue(), params=params)
        self._submit(job)
        deadline = loop.time() + timeout
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise RequestTimeout(f"the request took longer than the server's timeout ({said:g} s).")
                item = await _next_within(job.stream, remaining)
                if item is _LATE:
                    raise RequestTimeout(f"the request took longer than the server's timeout ({said:g} s).")
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled = True

    # -- the worker thread -------------------------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        """The next batch: the oldest job plus waiting jobs of the same adapter and kind."""
        with self._cond:
            while self._running and not self._queue:
                self._cond.wait(timeout=0.5)
            if not self._running:
                return None
            first = self._queue[0]
            if first.kind == "call":
                return [self._queue.pop(0)]
            deadline = time.monotonic() + self.max_wait
            while self._running:
                batch = self._matching(first)
                if sum(j.size for j in batch) >= self.max_batch_size or time.monotonic() >= deadline:
                    break
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            for job in batch:
                self._queue.remove(job)
            return batch

    def _matching(self, first: Job) -> list[Job]:
        batch, size = [], 0
        for job in self._queue:
            if job.kind == first.kind and job.adapter == first.adapter:
                if batch and size + job.size > self.max_batch_size:
                    break
                batch.append(job)
                size += job.size
        return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [j for j in batch if not j.cancelled]
            if not live:
                continue
            try:
                if live[0].kind == "call":
                    live[0].resolve(live[0].payload())
                elif live[0].kind in ANSWERED:
                    self._answer_batch(live)
                else:
                    self._generate(live)
            except BaseException as e:  # the request gets the error; the worker goes on
                for job in live:
                    if job.stream is not None:
                        job.push(_exception(e))
                    else:
                        job.resolve(error=_exception(e))

    def _answer_batch(self, jobs: list[Job]) -> None:
        """One engine call for the batch; if it fails, each request again on its own, so only a bad one fails."""
        try:
            results = self._engine_call(jobs)
        except BaseException:
            if len(jobs) == 1:
                raise
            for job in jobs:
                if job.cancelled:
                    continue
                try:
                    job.resolve(self._engine_call([job]))
                except BaseException as alone:
                    job.resolve(error=_exception(alone))
            return
        start = 0
        for job in jobs:
            job.resolve(results[start : start + job.size])
            start += job.size

    def _engine_call(self, jobs: list[Job]) -> list:
        kind = jobs[0].kind
        items = [item for job in jobs for item in job.payload]
        self.on_batch(kind, len(items))
        results = list(getattr(self.engine, ANSWERED[kind])(jobs[0].adapter, items))
        if len(results) != len(items):
            raise RuntimeError(f"the engine answered {len(results)} of {len(items)} inputs.")
        return results

    def _generate(self, jobs: list[Job]) -> None:
        """One decode loop for the batch. If it fails before any text came out, each request runs again on its own,
        so a bad prompt fails alone; a failure after text was streamed reaches every request of the batch."""
        if not self._stream(jobs, isolate=len(jobs) > 1):
            for job in jobs:
                if not job.cancelled:
                    self._stream([job], isolate=False)

    def _stream(self, jobs: list[Job], isolate: bool) -> bool:
        """Run and route one generation; False (nothing pushed, no end marker) if it failed early and ``isolate``."""
        prompts = [p for job in jobs for p in job.payload]
        params = [p for job in jobs for p in job.params]
        owners = [(job, i) for job in jobs for i in range(job.size)]
        self.on_batch("generate", len(prompts))
        stream, streamed = None, False
        try:
            stream = self.engine.generate(jobs[0].adapter, prompts, params)
            for chunks in stream:
                streamed = True
                per_job: dict[int, list] = {}
                for chunk in chunks:
                    job, local = owners[chunk.index]
                    chunk.index = local
                    per_job.setdefault(id(job), []).append(chunk)
                for job in jobs:
                    if id(job) in per_job and not job.cancelled:
                        job.push(per_job[id(job)])
                if all(job.cancelled for job in jobs):
                    break
        except BaseException as e:
            if isolate and not streamed:
                _close(stream)
                return False
            for job in jobs:  # reported to every request of the batch, before its end marker
                job.push(_exception(e))
        _close(stream)
        for job in jobs:
            job.push(_DONE)
        return True


#: What :func:`_next_within` returns when nothing came in time.
_LATE = object()


async def _next_within(queue: asyncio.Queue, timeout: float) -> Any:
    """The queue's next item, or :data:`_LATE` after ``timeout`` seconds. Not ``asyncio.wait_for``: before Python
    3.12 it can swallow the caller's cancellation when the item arrives at the same moment (the request whose client
    left then waited for its whole generation, measured under load); a cancelled caller is cancelled here."""
    getter = asyncio.ensure_future(queue.get())
    try:
        done, _ = await asyncio.wait({getter}, timeout=timeout)
    finally:
        getter.cancel()  # a no-op once it is done
    return getter.result() if done else _LATE


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


def _exception(error: BaseException) -> Exception:
    """``error`` as an ordinary Exception (a Rust panic from a tokenizer is a BaseException, which the HTTP layer
    would not turn into an error response)."""
    if isinstance(error, Exception):
        return error
    wrapped = RuntimeError(f"{type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped
