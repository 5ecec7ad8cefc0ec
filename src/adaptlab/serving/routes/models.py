"""``GET /v1/models`` (the base and every adapter), and the admin routes that load and unload adapters at run time
(``POST /v1/admin/adapters``, ``DELETE /v1/admin/adapters/{name}``; API key required)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from adaptlab.errors import UserError
from adaptlab.serving.adapters import InvalidName, OutsideRoots, check_name, resolve_adapter
from adaptlab.serving.bodies import LoadAdapterRequest
from adaptlab.serving.http import ApiError, Served, public_source, require_key, served

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request, state: Served = Depends(served)) -> dict:
    admin = state.has_key(request)  # where a model came from on disk is for the admin only
    data = []
    for info in state.models.values():
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
    engine = state.engine
    info = await state.call(state.batcher.call(lambda: engine.load_adapter(spec), state.settings.timeout_s))
    state.models[name] = info
    return {"object": "model", "id": name, **info.to_dict()}


@router.delete("/v1/admin/adapters/{name}", dependencies=[Depends(require_key)])
async def admin_unload(name: str, state: Served = Depends(served)) -> dict:
    try:
        check_name(name)
    except InvalidName as e:
        raise ApiError(400, str(e), "invalid_model_name") from None
    state.lookup(name, "admin")
    engine = state.engine
    await state.call(state.batcher.call(lambda: engine.unload_adapter(name), state.settings.timeout_s))
    state.models.pop(name, None)
    return {"object": "model", "id": name, "deleted": True}
