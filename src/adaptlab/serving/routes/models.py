"""``GET /v1/models`` (the base and every adapter), and the admin routes that load and unload adapters at run time
(``POST /v1/admin/adapters``, ``DELETE /v1/admin/adapters/{name}``; API key required)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from adaptlab.errors import UserError
from adaptlab.serving.adapters import InvalidName, OutsideRoots, check_name, resolve_adapter
from adaptlab.serving.bodies import LoadAdapterRequest
from adaptlab.serving.engine import AdapterInfo
from adaptlab.serving.http import ApiError, Served, public_source, require_key, served

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request, state: Served = Depends(served)) -> dict:
    admin = state.has_key(request)  # where a model came from on disk is for the admin only
    data = []
    for info in list(state.models.values()):  # a copy: admin loads change it on the engine's thread
        fields = info.to_dict()
        if not admin:
            fields["source"] = public_source(fields.get("source"))
        data.append({"id": info.name, "object": "model", "created": 0, "owned_by": "adaptlab", **fields})
    return {"object": "list", "data": data}


@router.post("/v1/admin/adapters", status_code=201, dependencies=[Depends(require_key)])
async def admin_load(req: LoadAdapterRequest, state: Served = Depends(served)) -> dict:
    try:
        name = check_name(req.name)
    except InvalidName as e:
        raise ApiError(400, str(e), "invalid_model_name") from None
    if name in state.models:
        raise ApiError(409, f"adapter '{name}' is already loaded; unload it first.", "adapter_exists")
    try:  # a path outside the roots is refused from its text alone, before anything on disk is looked at
        spec = resolve_adapter(name, req.path, list(state.settings.adapter_roots))
    except OutsideRoots as e:
        raise ApiError(403, str(e), "invalid_adapter") from None
    except UserError as e:
        raise ApiError(400, str(e), "invalid_adapter") from None
    def load() -> AdapterInfo:  # the list of models changes with the engine, even if the request timed out
        loaded = state.engine.load_adapter(spec)
        state.models[name] = loaded
        return loaded

    info = await _admin(state, load, "load")
    return {"object": "model", "id": name, **info.to_dict()}


@router.delete("/v1/admin/adapters/{name}", dependencies=[Depends(require_key)])
async def admin_unload(name: str, state: Served = Depends(served)) -> dict:
    try:
        check_name(name)
    except InvalidName as e:
        raise ApiError(400, str(e), "invalid_model_name") from None
    state.lookup(name, "admin")
    def unload() -> None:
        state.engine.unload_adapter(name)
        state.models.pop(name, None)

    await _admin(state, unload, "unload")
    return {"object": "model", "id": name, "deleted": True}


async def _admin(state: Served, job: Any, what: str) -> Any:
    """Run an admin ``job`` on the engine's thread. Past the timeout the 504 says the job may still finish: one
    that started goes on, and the list of models follows the engine."""
    try:
        return await state.call(state.batcher.call(job, state.settings.timeout_s))
    except ApiError as e:
        if e.status != 504:
            raise
        raise ApiError(504, f"{e.message} The {what} goes on if it had started; GET /v1/models shows the models "
                            "loaded.", e.code) from None
