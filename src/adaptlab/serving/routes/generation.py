"""``POST /v1/completions`` and ``POST /v1/chat/completions`` (OpenAI-shaped, streamed as server-sent events or
answered whole). The engine decodes as the ladder does (:mod:`adaptlab.generation.decoding`); this module only turns
requests into :class:`~adaptlab.serving.engine.GenerationParams` and chunks into responses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from adaptlab.errors import UserError
from adaptlab.serving.batching import QueueFull, RequestTimeout
from adaptlab.serving.bodies import ChatRequest, CompletionRequest
from adaptlab.serving.engine import EngineError, GenerationParams
from adaptlab.serving.http import ApiError, Served, error_body, served

router = APIRouter()


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request, state: Served = Depends(served)) -> Any:
    info = state.lookup(req.model, "completions")
    state.require(info, "decoder")
    prompts = state.texts(req.prompt, "prompt")
    params = _generation_params(state, req, req.max_tokens)
    return await _respond(state, request, info.name, prompts, params, req.stream, state.settings.timeout_s,
                          chat=False)


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatRequest, request: Request, state: Served = Depends(served)) -> Any:
    info = state.lookup(req.model, "chat")
    state.require(info, "decoder")
    state.texts([m.content for m in req.messages], "messages")
    params = _generation_params(state, req, req.max_completion_tokens or req.max_tokens)
    messages = [m.model_dump(include={"role", "content"}) for m in req.messages]
    engine = state.engine  # rendered on the engine's thread: it reads what admin loads and unloads change
    deadline = time.monotonic() + state.settings.timeout_s  # one timeout for the render and the generation
    prompt = await state.call(state.batcher.call(lambda: engine.chat_prompt(info.name, messages),
                                                 state.settings.timeout_s, admin=False))
    return await _respond(state, request, info.name, [prompt], params, req.stream, deadline - time.monotonic(),
                          chat=True)


def _generation_params(state: Served, req: CompletionRequest | ChatRequest,
                       max_tokens: int | None) -> GenerationParams:
    """The request's decoding settings, within the server's limits (400 beyond them)."""
    settings = state.settings
    if req.n != 1:
        raise ApiError(400, "n > 1 is not supported; send the request again for another sample.", "unsupported")
    wanted = max_tokens or settings.default_max_tokens
    if wanted > settings.max_tokens:
        raise ApiError(400, f"max_tokens={wanted} exceeds the server limit of {settings.max_tokens}.",
                       "max_tokens_exceeded", param="max_tokens")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4:
        raise ApiError(400, "at most 4 stop sequences.", "invalid_input", param="stop")
    return GenerationParams(max_tokens=wanted, temperature=req.temperature, top_p=req.top_p, stop=stop,
                            seed=req.seed, top_k=req.top_k or None, repetition_penalty=req.repetition_penalty)


async def _respond(state: Served, request: Request, name: str, prompts: list[Any], params: GenerationParams,
                   stream: bool, timeout: float, chat: bool) -> Any:
    """Start the generation (within ``timeout`` seconds); a stream of events, or the whole answer once every chunk
    is in."""
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    chunks = state.batcher.generate(name, prompts, [params] * len(prompts), timeout, state.settings.timeout_s)
    if stream:
        first = await state.call(_first(chunks))  # a failure before any text is an HTTP error, not an event
        events = _sse(state, ident, created, name, first, chunks, chat)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    batches = await _whole(request, chunks, state)
    if batches is None:
        return Response(status_code=499)  # nobody to answer (nginx's "client closed request", for the metrics)
    out = _collect(batches, len(prompts))
    usage_p = sum(o["prompt"] for o in out.values())
    usage_c = sum(o["completion"] for o in out.values())
    state.metrics.tokens.labels(name).inc(usage_c)
    usage = {"prompt_tokens": usage_p, "completion_tokens": usage_c, "total_tokens": usage_p + usage_c}
    head = {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": name}
    if chat:
        o = out[0]
        choices = [{"index": 0, "message": {"role": "assistant", "content": o["text"]},
                    "finish_reason": o["finish"] or "length"}]
    else:
        choices = [{"index": i, "text": o["text"], "logprobs": None, "finish_reason": o["finish"] or "length"}
                   for i, o in out.items()]
    return {**head, "choices": choices, "usage": usage}


async def _whole(request: Request, chunks: Any, state: Served) -> list[list] | None:
    """Every batch of chunks of an answer sent whole; None once the client has gone away (looked at every quarter
    second, from the moment the request is queued), its generation stopped or never started, so an abandoned
    request does not keep the engine busy."""
    async def collect() -> list[list]:
        return [batch async for batch in _rest(chunks, state.call)]

    task = asyncio.ensure_future(collect())
    while not task.done():
        await asyncio.wait({task}, timeout=0.25)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await chunks.aclose()
            return None
    return task.result()


def _collect(batches: list[list], n: int) -> dict[int, dict]:
    """Per prompt: its whole text, finish reason and token counts, from the streamed chunks."""
    out = {i: {"text": "", "finish": None, "prompt": 0, "completion": 0} for i in range(n)}
    for batch in batches:
        for c in batch:
            o = out[c.index]
            o["text"] += c.text
            o["finish"] = c.finish_reason or o["finish"]
            o["prompt"], o["completion"] = c.prompt_tokens, c.completion_tokens
    return out


async def _sse(state: Served, ident: str, created: int, name: str, first: Any, chunks: Any,
               chat: bool) -> AsyncIterator[bytes]:
    """The chunks as server-sent events; an error after the response started is one last event, then [DONE]."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict]) -> bytes:
        body = {"id": ident, "object": kind, "created": created, "model": name, "choices": choices}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    if chat:
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    produced = 0
    try:
        batch = first
        while batch is not None:
            for c in batch:
                produced = max(produced, c.completion_tokens)
                if chat:
                    delta = {"content": c.text} if c.text else {}
                    yield event([{"index": c.index, "delta": delta, "finish_reason": c.finish_reason}])
                else:
                    yield event([{"index": c.index, "text": c.text, "logprobs": None,
                                  "finish_reason": c.finish_reason}])
            batch = await _first(chunks)
    except Exception as e:  # any failure once the stream started: one last event says what went wrong
        yield f"data: {json.dumps(error_body(*_stream_error(e), 'stream_error'))}\n\n".encode()
    finally:
        state.metrics.tokens.labels(name).inc(produced)
        await chunks.aclose()
    yield b"data: [DONE]\n\n"


def _stream_error(error: Exception) -> tuple[int, str]:
    """The status and message of a failure in a stream: the request's own, or an internal error named by its type
    only (as :meth:`Served.call` answers it)."""
    if isinstance(error, RequestTimeout):
        return 504, str(error)
    if isinstance(error, QueueFull):
        return 429, str(error)
    if isinstance(error, EngineError):
        return error.status, str(error)
    if isinstance(error, UserError):
        return 400, str(error)
    return 500, f"internal error: {type(error).__name__}"


async def _first(chunks: Any) -> Any:
    """The next item of an async iterator, or None when it is exhausted."""
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


async def _rest(chunks: Any, wrap: Any) -> AsyncIterator[Any]:
    while True:
        item = await wrap(_first(chunks))
        if item is None:
            return
        yield item
