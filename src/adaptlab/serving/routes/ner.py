"""``POST /v1/ner``: named entities in texts, through a token-classification adapter (or a merged tagger base).

    {"model": "conll", "input": "Ada Lovelace lived in London."}  (or a list of texts)
    -> {"object": "list", "model": "conll", "usage": {"inputs": 1},
        "data": [{"index": 0, "entities": [{"start": 0, "end": 12, "label": "PER", "text": "Ada Lovelace",
                                            "score": 0.98}, ...]}]}

Offsets are character offsets into the text sent (``text == input[start:end]``), ``label`` the entity type, ``score``
the mean probability of the entity's word tags. The words, their alignment to sub-tokens and the decoding of BIO tags
are the ladder's own (:class:`~adaptlab.tasks.token_classification.ship.TokenPredictor`), so a served adapter finds
the entities its run recorded. A text without words (empty, blanks) has no entities. Limits (number of texts, their
length) and errors are those of ``/v1/classify``; a model of another kind gets 400 ``wrong_endpoint`` naming the
route that serves it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from adaptlab.serving.bodies import NerRequest
from adaptlab.serving.http import Served, served

router = APIRouter()


@router.post("/v1/ner")
async def ner(req: NerRequest, state: Served = Depends(served)) -> dict:
    info = state.lookup(req.model, "ner")
    state.require(info, "tagger")
    texts = state.texts(req.input, "input")
    results = await state.call(state.batcher.ner(info.name, texts, state.settings.timeout_s))
    data = [{"index": i, "entities": entities} for i, entities in enumerate(results)]
    return {"object": "list", "model": info.name, "data": data, "usage": {"inputs": len(texts)}}
