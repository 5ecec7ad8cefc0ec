"""``POST /v1/classify``: texts (and text pairs) through a classification adapter, or zero-shot through the base."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from adaptlab.bundle import pair_mismatch
from adaptlab.serving.bodies import ClassifyRequest
from adaptlab.serving.engine import BASE, AdapterInfo, ClassifyItem
from adaptlab.serving.http import ApiError, Served, served

router = APIRouter()


@router.post("/v1/classify")
async def classify(req: ClassifyRequest, state: Served = Depends(served)) -> dict:
    info = state.lookup(req.model, "classify")
    state.require(info, "classifier")
    inputs = state.texts(req.input, "input")
    pairs = state.texts(req.text_pair, "text_pair") if req.text_pair is not None else None
    if pairs is not None and len(pairs) != len(inputs):
        raise ApiError(400, f"'text_pair' has {len(pairs)} items for {len(inputs)} inputs.", "invalid_input")
    problem = pair_mismatch(f"adapter '{info.name}'", info.text_pair, pairs is not None, "'text_pair'")
    if problem:
        code = "text_pair_not_supported" if pairs is not None else "text_pair_required"
        raise ApiError(400, problem, code, param="text_pair")
    labels = _labels(req.labels, info)
    items = [ClassifyItem(t, pairs[i] if pairs else None, labels) for i, t in enumerate(inputs)]
    results = await state.call(state.batcher.classify(info.name, items, state.settings.timeout_s))
    data = [{"index": i, "label": r.label, "scores": r.scores} for i, r in enumerate(results)]
    return {"object": "list", "model": info.name, "data": data, "usage": {"inputs": len(items)}}


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
