"""The HTTP layer: OpenAI-shaped endpoints over the engine, with limits, JSON errors and Prometheus metrics.

    POST /v1/classify            {"model": "rt", "input": ["a gorgeous film", ...]}
    POST /v1/completions         {"model": "base", "prompt": "Once upon", "max_tokens": 16, "stream": true}
    POST /v1/chat/completions    {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}
    GET  /v1/models  /healthz  /metrics  /  (the playground)
    POST /v1/admin/adapters {"name": "rt2", "path": "runs/rt/lora"}   DELETE /v1/admin/adapters/rt2   (API key)

``model`` is an adapter name, or ``"base"`` for the bare base model. Every error is JSON:
``{"error": {"message": ..., "type": ..., "code": ...}}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from adaptlab.bundle import pair_mismatch
from adaptlab.errors import UserError, did_you_mean
from adaptlab.serving.adapters import InvalidName, OutsideRoots, check_name, resolve_adapter
from adaptlab.serving.batching import Batcher, QueueFull, RequestTimeout
from adaptlab.serving.engine import BASE, AdapterInfo, ClassifyItem, Engine, EngineError, GenerationParams
from adaptlab.serving.settings import ServerSettings

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
               413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
               503: "server_error", 504: "timeout_error"}
log = logging.getLogger(__name__)
PATHS = ("/", "/healthz", "/metrics", "/v1/models", "/v1/classify", "/v1/completions", "/v1/chat/completions",
         "/v1/admin/adapters")


class ApiError(Exception):
    """An HTTP error with an OpenAI-style JSON body."""

    def __init__(self, status: int, message: str, code: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


def error_response(status: int, message: str, code: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": code, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


# -- request bodies (extra fields that OpenAI clients send are ignored) -------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*")
    @classmethod
    def _unicode_text(cls, value: Any) -> Any:
        """Every string must be valid Unicode: JSON's ``\\ud800`` escapes can carry lone UTF-16 surrogates, which no
        tokenizer (and no UTF-8 encoder) takes. Refused here (422 naming the field and item), never in a batch."""
        problem = _bad_text(value)
        if problem:
            raise ValueError(problem)
        return value


def _bad_text(value: Any, where: str = "") -> str | None:
    """What is wrong with the first string in ``value`` (a str, list or dict) that can't be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return (f"{where or 'the text'} is not valid Unicode: a lone surrogate U+{ord(value[e.start]):04X} at "
                    f"character {e.start} (send text that encodes as UTF-8).")
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = _bad_text(item, f"{where} item {i}".strip())
            if problem:
                return problem
    elif isinstance(value, dict):
        for i, (key, item) in enumerate(value.items()):
            problem = _bad_text(key, f"{where} key {i}".strip()) or _bad_text(item, f"{where} value {i}".strip())
            if problem:
                return problem
    return None


class ClassifyRequest(_Body):
    model: str = Field(..., description="Adapter name, or 'base'.")
    input: str | list[str] = Field(..., description="A text or a list of texts.")
    text_pair: str | list[str] | None = Field(None, description="Second text(s), for text-pair tasks.")
    labels: list[str] | dict[str, str] | None = Field(
        None, description="Zero-shot labels for 'base': names, or {name: description}.")


class _Sampling(_Body):
    """Fields shared by the OpenAI completion and chat request bodies."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1)
    seed: int | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatRequest(_Sampling):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class LoadAdapterRequest(_Body):
    name: str
    path: str


# -- metrics ------------------------------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics in a registry of their own (one per app)."""

    def __init__(self, batcher: Batcher, models: dict[str, AdapterInfo]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: they double the output for nothing here
        self.registry = CollectorRegistry()
        self.requests = Counter("adaptlab_http_requests_total", "HTTP requests by path and status",
                                ["path", "status"], registry=self.registry)
        self.latency = Histogram("adaptlab_http_request_seconds", "HTTP request latency (to the last byte)",
                                 ["path"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.model_requests = Counter("adaptlab_model_requests_total", "Inference requests by model and endpoint",
                                      ["model", "endpoint"], registry=self.registry)
        self.batch = Histogram("adaptlab_batch_size", "Inputs per engine call", ["kind"], registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.tokens = Counter("adaptlab_generated_tokens_total", "Completion tokens generated", ["model"],
                              registry=self.registry)
        queue = Gauge("adaptlab_queue_depth", "Requests waiting for the engine", registry=self.registry)
        queue.set_function(lambda: batcher.depth)
        loaded = Gauge("adaptlab_models_loaded", "Models served, the base included", registry=self.registry)
        loaded.set_function(lambda: len(models))

    def render(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once a streamed body passes the limit; FastAPI passes HTTPExceptions through."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the server limit of {limit} bytes.")


class Guard:
    """ASGI middleware: rejects bodies over the limit (413), answers any unhandled error with a JSON 500 (logged
    here, not re-raised to the server, which would drop the connection), and records every request's status and
    latency."""

    def __init__(self, app: Any, settings: ServerSettings, metrics: Metrics):
        self.app, self.limit, self.metrics = app, settings.max_body_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.startswith("/v1/") and scope.get("method") == "POST":  # bodies are JSON whatever the header says
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        label = path if path in PATHS else ("/v1/admin/adapters" if path.startswith("/v1/admin/") else "other")
        start, state = time.perf_counter(), {"status": 500, "started": False}
        too_large = error_response(413, f"request body is larger than the server limit of {self.limit} bytes.",
                                   "body_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await too_large(scope, receive, send)
            self._record(label, 413, start)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not state["started"]:
                await too_large(scope, receive, send)
                state["status"] = 413
        except Exception as e:
            log.exception("internal error on %s %s", scope.get("method"), path)
            if not state["started"]:  # once a response is under way, nothing more can be said to the client
                await error_response(500, f"internal error: {type(e).__name__}", "internal_error")(scope, receive,
                                                                                                    send)
                state["status"] = 500
        finally:
            self._record(label, state["status"], start)

    def _record(self, label: str, status: int, start: float) -> None:
        self.metrics.requests.labels(label, str(status)).inc()
        self.metrics.latency.labels(label).observe(time.perf_counter() - start)


# -- the app --------------------------------------------------------------------------------------------------------


def create_app(engine: Engine, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app over ``engine``; its worker thread starts with the app and stops with it."""
    settings = settings or ServerSettings()
    models: dict[str, AdapterInfo] = {info.name: info for info in engine.adapters()}
    batcher = Batcher(engine, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                      max_queue=settings.max_queue)
    metrics = Metrics(batcher, models)
    batcher.on_batch = lambda kind, n: metrics.batch.labels(kind).observe(n)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="adaptlab serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine, app.state.batcher, app.state.models, app.state.settings = engine, batcher, models, settings
    app.add_middleware(Guard, settings=settings, metrics=metrics)
    _error_handlers(app)

    def lookup(name: str, endpoint: str) -> AdapterInfo:
        try:
            check_name(name, allow_base=True)
        except InvalidName as e:
            raise ApiError(400, str(e), "invalid_model_name") from None
        if name not in models:
            known = sorted(models)
            raise ApiError(404, f"model '{name}' not found.{did_you_mean(name, known)} Available: {', '.join(known)}",
                           "model_not_found", available=known)
        metrics.model_requests.labels(name, endpoint).inc()
        return models[name]

    def texts(value: str | list[str], what: str) -> list[str]:
        items = [value] if isinstance(value, str) else list(value)
        if not items:
            raise ApiError(400, f"'{what}' is empty.", "invalid_input")
        if len(items) > settings.max_inputs:
            raise ApiError(400, f"'{what}' has {len(items)} items; the server takes at most {settings.max_inputs}.",
                           "too_many_inputs")
        longest = max(len(t) for t in items)
        if longest > settings.max_input_chars:
            raise ApiError(400, f"'{what}' has a text of {longest} characters; the server limit is "
                                f"{settings.max_input_chars}.", "input_too_long")
        return items

    async def engine_call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except QueueFull as e:
            raise ApiError(429, str(e), "queue_full") from None
        except RequestTimeout as e:
            raise ApiError(504, str(e), "timeout") from None
        except EngineError as e:
            raise ApiError(e.status, str(e), e.code) from None
        except UserError as e:
            raise ApiError(400, str(e), "invalid_request") from None
        except ApiError:
            raise
        except Exception as e:  # this request's own failure (the batcher ran it alone): a JSON 500, nothing more
            raise ApiError(500, f"internal error: {type(e).__name__}", "internal_error") from None

    def generation_params(req: CompletionRequest | ChatRequest, max_tokens: int | None) -> GenerationParams:
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
                                seed=req.seed)

    def require_generation(info: AdapterInfo) -> None:
        if info.task != "generation":
            raise ApiError(400, f"model '{info.name}' is a {info.task} model; use /v1/classify.", "wrong_endpoint")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        from adaptlab.serving.playground import PAGE

        return HTMLResponse(PAGE)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        alive = batcher._thread is not None and batcher._thread.is_alive()
        body = {"status": "ok" if alive else "worker stopped", "base": _public_source(engine.base_name),
                "models": len(models), "queue": batcher.depth}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return metrics.render()

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        admin = has_key(request)  # where a model came from on disk is for the admin only
        data = []
        for info in models.values():
            fields = info.to_dict()
            if not admin:
                fields["source"] = _public_source(fields.get("source"))
            data.append({"id": info.name, "object": "model", "created": 0, "owned_by": "adaptlab", **fields})
        return {"object": "list", "data": data}

    @app.post("/v1/classify")
    async def classify(req: ClassifyRequest) -> dict:
        info = lookup(req.model, "classify")
        if info.task != "classification":
            raise ApiError(400, f"model '{info.name}' generates text; use /v1/completions or /v1/chat/completions.",
                           "wrong_endpoint")
        inputs = texts(req.input, "input")
        pairs = texts(req.text_pair, "text_pair") if req.text_pair is not None else None
        if pairs is not None and len(pairs) != len(inputs):
            raise ApiError(400, f"'text_pair' has {len(pairs)} items for {len(inputs)} inputs.", "invalid_input")
        problem = pair_mismatch(f"adapter '{info.name}'", info.text_pair, pairs is not None, "'text_pair'")
        if problem:
            code = "text_pair_not_supported" if pairs is not None else "text_pair_required"
            raise ApiError(400, problem, code, param="text_pair")
        labels = _labels(req.labels, info)
        items = [ClassifyItem(t, pairs[i] if pairs else None, labels) for i, t in enumerate(inputs)]
        results = await engine_call(batcher.classify(info.name, items, settings.timeout_s))
        data = [{"index": i, "label": r.label, "scores": r.scores} for i, r in enumerate(results)]
        return {"object": "list", "model": info.name, "data": data, "usage": {"inputs": len(items)}}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> Any:
        info = lookup(req.model, "completions")
        require_generation(info)
        prompts = texts(req.prompt, "prompt")
        params = generation_params(req, req.max_tokens)
        return await _generation_response(info.name, prompts, params, req.stream, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest) -> Any:
        info = lookup(req.model, "chat")
        require_generation(info)
        texts([m.content for m in req.messages], "messages")
        params = generation_params(req, req.max_completion_tokens or req.max_tokens)
        prompt = engine.chat_prompt(info.name, [m.model_dump(include={"role", "content"}) for m in req.messages])
        return await _generation_response(info.name, [prompt], params, req.stream, chat=True)

    async def _generation_response(name: str, prompts: list[str], params: GenerationParams, stream: bool,
                                   chat: bool) -> Any:
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        chunks = batcher.generate(name, prompts, [params] * len(prompts), settings.timeout_s)
        first = await engine_call(_first(chunks))
        if stream:
            return StreamingResponse(_sse(ident, created, name, first, chunks, chat), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        out = {i: {"text": "", "finish": None, "prompt": 0, "completion": 0} for i in range(len(prompts))}
        batches = [first] if first is not None else []
        async for batch in _rest(chunks, engine_call):
            batches.append(batch)
        for batch in batches:
            for c in batch:
                o = out[c.index]
                o["text"] += c.text
                o["finish"] = c.finish_reason or o["finish"]
                o["prompt"], o["completion"] = c.prompt_tokens, c.completion_tokens
        usage_p = sum(o["prompt"] for o in out.values())
        usage_c = sum(o["completion"] for o in out.values())
        metrics.tokens.labels(name).inc(usage_c)
        usage = {"prompt_tokens": usage_p, "completion_tokens": usage_c, "total_tokens": usage_p + usage_c}
        if chat:
            o = out[0]
            choices = [{"index": 0, "message": {"role": "assistant", "content": o["text"]},
                        "finish_reason": o["finish"] or "length"}]
            return {"id": ident, "object": "chat.completion", "created": created, "model": name, "choices": choices,
                    "usage": usage}
        choices = [{"index": i, "text": o["text"], "logprobs": None, "finish_reason": o["finish"] or "length"}
                   for i, o in out.items()]
        return {"id": ident, "object": "text_completion", "created": created, "model": name, "choices": choices,
                "usage": usage}

    async def _sse(ident: str, created: int, name: str, first: Any, chunks: Any, chat: bool) -> AsyncIterator[bytes]:
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
        except (RequestTimeout, EngineError, QueueFull) as e:
            status = 504 if isinstance(e, RequestTimeout) else getattr(e, "status", 500)
            body = {"error": {"message": str(e), "type": ERROR_TYPES.get(status, "server_error"),
                              "code": "stream_error"}}
            yield f"data: {json.dumps(body)}\n\n".encode()
        finally:
            metrics.tokens.labels(name).inc(produced)
            await chunks.aclose()
        yield b"data: [DONE]\n\n"

    def has_key(request: Request) -> bool:
        """Whether the request carries the admin key (False when the server has none)."""
        if not settings.api_key:
            return False
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        return bool(given) and hmac.compare_digest(given.encode(errors="replace"), settings.api_key.encode())

    def require_key(request: Request) -> None:
        if not settings.api_key:
            raise ApiError(403, "admin endpoints are disabled: start the server with --api-key.", "admin_disabled")
        if not has_key(request):
            raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY').", "invalid_api_key")

    @app.post("/v1/admin/adapters", status_code=201, dependencies=[Depends(require_key)])
    async def admin_load(req: LoadAdapterRequest) -> dict:
        try:
            name = check_name(req.name)
        except InvalidName as e:
            raise ApiError(400, str(e), "invalid_model_name") from None
        if name in models:
            raise ApiError(409, f"adapter '{name}' is already loaded; unload it first.", "adapter_exists")
        try:  # a path outside the roots is refused from its text alone, before anything on disk is looked at
            spec = resolve_adapter(name, req.path, list(settings.adapter_roots))
        except OutsideRoots as e:
            raise ApiError(403, str(e), "invalid_adapter") from None
        except UserError as e:
            raise ApiError(400, str(e), "invalid_adapter") from None
        info = await engine_call(batcher.call(lambda: engine.load_adapter(spec), settings.timeout_s))
        models[name] = info
        return {"object": "model", "id": name, **info.to_dict()}

    @app.delete("/v1/admin/adapters/{name}", dependencies=[Depends(require_key)])
    async def admin_unload(name: str) -> dict:
        try:
            check_name(name)
        except InvalidName as e:
            raise ApiError(400, str(e), "invalid_model_name") from None
        lookup(name, "admin")
        await engine_call(batcher.call(lambda: engine.unload_adapter(name), settings.timeout_s))
        models.pop(name, None)
        return {"object": "model", "id": name, "deleted": True}

    return app


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


def _public_source(source: str | None) -> str | None:
    """``source`` (a model spec) for anyone to see, or None when it is a place on this machine's disk."""
    if not source:
        return source
    if os.path.isabs(source) or source.startswith(("~", ".")) or os.path.exists(source):
        return None
    return source


def _labels(value: list[str] | dict[str, str] | None, info: AdapterInfo) -> dict[str, str] | None:
    """Zero-shot labels as {name: description}; only the base model takes them."""
    if value is None:
        return None
    if info.name != BASE:
        raise ApiError(400, f"'labels' is for zero-shot with model 'base'; adapter '{info.name}' has its own labels "
                            f"{info.labels}.", "invalid_input", param="labels")
    labels = {v: v for v in value} if isinstance(value, list) else dict(value)
    if not 2 <= len(labels) <= 100 or any(not str(k).strip() or not str(v).strip() for k, v in labels.items()):
        raise ApiError(400, "'labels' needs 2 to 100 non-empty labels.", "invalid_input", param="labels")
    return labels


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else (
            {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)
        return error_response(exc.status, exc.message, exc.code, headers=headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "the request body is not valid JSON.", "invalid_json")
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))[:200]}
                   for e in errors[:10]]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        return error_response(422, f"{'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}", "invalid_request",
                              details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "body_too_large" if isinstance(exc, _BodyTooLarge) else "http_error"
        return error_response(exc.status_code, str(exc.detail), code)

    @app.exception_handler(Exception)
    async def crash(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}", "internal_error")
