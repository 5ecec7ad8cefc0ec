"""What every router shares: JSON errors, and the server's state (engine, batcher, models, settings, metrics) with
the checks the endpoints have in common (model lookup, input limits, the admin key, engine errors as HTTP errors).

A route gets the state with ``served: Served = Depends(served)``; admin routes add ``Depends(require_key)``.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from adaptlab.errors import UserError, did_you_mean
from adaptlab.serving.adapters import InvalidName, check_name
from adaptlab.serving.batching import Batcher, QueueFull, RequestTimeout
from adaptlab.serving.engine import ROUTES, AdapterInfo, Engine, EngineError
from adaptlab.serving.metrics import Metrics
from adaptlab.serving.settings import ServerSettings

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
               413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
               503: "server_error", 504: "timeout_error"}


class ApiError(Exception):
    """An HTTP error with an OpenAI-style JSON body."""

    def __init__(self, status: int, message: str, code: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


def error_body(status: int, message: str, code: str, **extra: Any) -> dict:
    """``{"error": {"message", "type", "code", ...}}``, the type named after the status as OpenAI names it."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": code, **extra}}


def error_response(status: int, message: str, code: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, **extra), status_code=status, headers=headers)


@dataclass
class Served:
    """The state of one app: what the routes read and the checks they share."""

    engine: Engine
    batcher: Batcher
    models: dict[str, AdapterInfo]
    settings: ServerSettings
    metrics: Metrics

    def lookup(self, name: str, endpoint: str) -> AdapterInfo:
        """The model called ``name`` (400 for a malformed name, 404 naming the others), counted for ``endpoint``."""
        try:
            check_name(name, allow_base=True)
        except InvalidName as e:
            raise ApiError(400, str(e), "invalid_model_name") from None
        info = self.models.get(name)  # one read: the engine's thread may unload it meanwhile
        if info is None:
            known = sorted(self.models)
            raise ApiError(404, f"model '{name}' not found.{did_you_mean(name, known)} Available: {', '.join(known)}",
                           "model_not_found", available=known)
        self.metrics.model_requests.labels(name, endpoint).inc()
        return info

    @staticmethod
    def require(info: AdapterInfo, kind: str) -> None:
        """400 ``wrong_endpoint`` naming the model and the route it is served on, unless it is served as ``kind``
        (its task's export kind: classifier, decoder, tagger)."""
        if info.export_kind != kind:
            served = ROUTES.get(info.export_kind or "")
            where = f"it is served on {served}" if served else "no endpoint of this server serves it"
            raise ApiError(400, f"model '{info.name}' is a {info.task} model: {where}, not {ROUTES[kind]}.",
                           "wrong_endpoint", served_on=served)

    def texts(self, value: str | list[str], what: str) -> list[str]:
        """``value`` as a list of texts within the server's limits on count and length (400 otherwise)."""
        settings = self.settings
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

    async def call(self, awaitable: Any) -> Any:
        """What ``awaitable`` (a batcher call) returns, its failures as ApiErrors with their status and code."""
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

    def has_key(self, request: Request) -> bool:
        """Whether the request carries the admin key (False when the server has none)."""
        key = self.settings.api_key
        if not key:
            return False
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        return bool(given) and hmac.compare_digest(given.encode(errors="replace"), key.encode())


def served(request: Request) -> Served:
    """Dependency: the state of the app the request came to."""
    return request.app.state.served


def require_key(request: Request) -> None:
    """Dependency of the admin routes: 403 when the server has no key, 401 when the request lacks it."""
    state = served(request)
    if not state.settings.api_key:
        raise ApiError(403, "admin endpoints are disabled: start the server with --api-key.", "admin_disabled")
    if not state.has_key(request):
        raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY').", "invalid_api_key")


def public_source(source: str | None) -> str | None:
    """``source`` (a model spec) for anyone to see, or None when it is a place on this machine's disk."""
    if not source:
        return source
    if os.path.isabs(source) or source.startswith(("~", ".")) or os.path.exists(source):
        return None
    return source
