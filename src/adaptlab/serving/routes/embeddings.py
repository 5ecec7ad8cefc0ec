"""``POST /v1/embeddings`` (OpenAI's shape): sentence embeddings through an embedding adapter, or the bare base.

    {"model": "chat-mnr", "input": ["how was your weekend?", "great, we went hiking"]}
    -> {"object": "list", "model": "chat-mnr", "usage": {"prompt_tokens": 14, "total_tokens": 14},
        "data": [{"object": "embedding", "index": 0, "embedding": [0.021, ...]}, ...]}

An embedding adapter is a run of the ``embedding`` task trained with ``lora: true`` (its adapter loads next to the
others on the shared base); ``"base"`` is any encoder base, pooled as its sentence-transformers config says (mean by
default). Vectors are L2-normalised, as the ladder's embedding rungs encode them, so a dot product is the cosine.
``encoding_format: "base64"`` answers little-endian float32 bytes, as OpenAI's clients ask by default. Limits and
errors are those of ``/v1/classify``; a model of another kind gets 400 ``wrong_endpoint``.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends

from adaptlab.serving.bodies import EmbeddingsRequest
from adaptlab.serving.engine import BASE, AdapterInfo
from adaptlab.serving.http import ApiError, Served, served

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(req: EmbeddingsRequest, state: Served = Depends(served)) -> dict:
    info = state.lookup(req.model, "embeddings")
    _require_embedder(state, info)
    texts = state.texts(req.input, "input")
    results = await state.call(state.batcher.embed(info.name, texts, state.settings.timeout_s))
    size = len(results[0].vector)
    if req.dimensions is not None and req.dimensions != size:
        raise ApiError(400, f"'dimensions' is {req.dimensions}, but model '{info.name}' embeds into {size} "
                            "dimensions and adaptlab does not shorten embeddings; leave 'dimensions' out.",
                       "invalid_input", param="dimensions")
    data = [{"object": "embedding", "index": i, "embedding": _encoded(r.vector, req.encoding_format)}
            for i, r in enumerate(results)]
    tokens = sum(r.tokens for r in results)
    return {"object": "list", "model": info.name, "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _require_embedder(state: Served, info: AdapterInfo) -> None:
    """An embedding adapter, or the base when it is an encoder (a decoder base embeds nothing here)."""
    if info.name == BASE and info.export_kind != "decoder":
        return
    state.require(info, "embedder")


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector
