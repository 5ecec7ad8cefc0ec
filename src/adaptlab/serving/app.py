"""The HTTP layer: OpenAI-shaped endpoints over the engine, with limits, JSON errors and Prometheus metrics.

    POST /v1/classify            {"model": "rt", "input": ["a gorgeous film", ...]}
    POST /v1/ner                 {"model": "conll", "input": ["Ada Lovelace lived in London.", ...]}
    POST /v1/embeddings          {"model": "chat-mnr", "input": ["how was your weekend?", ...]}
    POST /v1/completions         {"model": "base", "prompt": "Once upon", "max_tokens": 16, "stream": true}
    POST /v1/chat/completions    {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}
    GET  /v1/models  /healthz  /metrics  /  (the playground)
    POST /v1/admin/adapters {"name": "rt2", "path": "runs/rt/lora"}   DELETE /v1/admin/adapters/rt2   (API key)

``model`` is an adapter name, or ``"base"`` for the bare base model. Every error is JSON:
``{"error": {"message": ..., "type": ..., "code": ...}}``.

The app is assembled here from parts that each have a module:

- the routes, one ``APIRouter`` per concern in :mod:`adaptlab.serving.routes` (listed in :data:`ROUTERS`);
- the request bodies in :mod:`adaptlab.serving.bodies`;
- the state the routes share and their common checks (model lookup, input limits, admin key, engine errors as
  HTTP errors) in :mod:`adaptlab.serving.http`;
- the Prometheus metrics in :mod:`adaptlab.serving.metrics`, the body-size guard and the JSON error handlers in
  :mod:`adaptlab.serving.middleware`.

Adding a router (e.g. ``POST /v1/ner``):

1. write ``src/adaptlab/serving/routes/ner.py`` with ``router = APIRouter()`` and its handlers; take the request
   body as a model derived from ``bodies._Body`` (Unicode checked, unknown fields ignored), the server's state as
   ``state: Served = Depends(served)``, and use ``state.lookup(req.model, "ner")``, ``state.texts(...)`` and
   ``await state.call(state.batcher...)`` so that limits, errors and metrics behave as on the other routes; raise
   :class:`~adaptlab.serving.http.ApiError` for a JSON error; add ``dependencies=[Depends(require_key)]`` for an
   admin-only route;
2. add ``ner.router`` to :data:`ROUTERS` below. Its paths are then counted under their own label in the request
   metrics (any path not registered by a router is counted as ``other``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from adaptlab.serving.batching import Batcher
from adaptlab.serving.engine import AdapterInfo, Engine
from adaptlab.serving.http import Served
from adaptlab.serving.metrics import Metrics
from adaptlab.serving.middleware import Guard, install_error_handlers
from adaptlab.serving.routes import classify, embeddings, generation, health, models, ner, playground
from adaptlab.serving.settings import ServerSettings

#: Every router of the app, in the order their routes are matched.
ROUTERS: tuple[APIRouter, ...] = (playground.router, health.router, models.router, classify.router,
                                  ner.router, embeddings.router, generation.router)


def create_app(engine: Engine, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app over ``engine``; its worker thread starts with the app and stops with it."""
    settings = settings or ServerSettings()
    known: dict[str, AdapterInfo] = {info.name: info for info in engine.adapters()}
    batcher = Batcher(engine, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                      max_queue=settings.max_queue)
    metrics = Metrics(batcher, known)
    batcher.on_batch = lambda kind, n: metrics.batch.labels(kind).observe(n)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="adaptlab serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.served = Served(engine, batcher, known, settings, metrics)
    app.state.engine, app.state.batcher, app.state.models, app.state.settings = engine, batcher, known, settings
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(Guard, settings=settings, metrics=metrics, paths=_metric_paths())
    install_error_handlers(app)
    return app


def _metric_paths() -> frozenset[str]:
    """The paths the request metrics label by name: every fixed path of the routers (``/v1/admin/...`` paths with
    a name in them count as ``/v1/admin/adapters``)."""
    return frozenset(route.path for router in ROUTERS for route in router.routes if "{" not in route.path)
