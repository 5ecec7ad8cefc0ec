"""The HTTP layer around the routes: the body-size / JSON-500 guard (which records the request metrics) and the
JSON error handlers."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adaptlab.serving.http import ApiError, error_response
from adaptlab.serving.metrics import Metrics
from adaptlab.serving.settings import ServerSettings

log = logging.getLogger("adaptlab.serving.app")


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once a streamed body passes the limit; FastAPI passes HTTPExceptions through."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the server limit of {limit} bytes.")


class Guard:
    """ASGI middleware: rejects bodies over the limit (413), answers any unhandled error with a JSON 500 (logged
    here, not re-raised to the server, which would drop the connection), and records every request's status and
    latency."""

    def __init__(self, app: Any, settings: ServerSettings, metrics: Metrics, paths: frozenset[str]):
        self.app, self.limit, self.metrics, self.paths = app, settings.max_body_bytes, metrics, paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.startswith("/v1/") and scope.get("method") == "POST":  # bodies are JSON whatever the header says
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        label = path if path in self.paths else ("/v1/admin/adapters" if path.startswith("/v1/admin/") else "other")
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


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app answers is JSON: ApiErrors (with Retry-After on 429, WWW-Authenticate on 401), invalid
    bodies (400 for bad JSON, 422 naming the field), HTTP errors (404, 405, 413) and anything else (500)."""
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
