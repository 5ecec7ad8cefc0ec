"""``GET /healthz`` (200 while the engine's worker runs, 503 once it stopped) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from adaptlab.serving.http import Served, public_source, served

router = APIRouter()


@router.get("/healthz")
async def healthz(state: Served = Depends(served)) -> JSONResponse:
    batcher = state.batcher
    alive = batcher._thread is not None and batcher._thread.is_alive()
    body = {"status": "ok" if alive else "worker stopped", "base": public_source(state.engine.base_name),
            "models": len(state.models), "queue": batcher.depth}
    return JSONResponse(body, status_code=200 if alive else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus(state: Served = Depends(served)) -> Response:
    return state.metrics.render()
