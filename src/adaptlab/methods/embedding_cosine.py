"""Scored pairs: the cosine of the two embeddings learns to order (CoSENT) or match (CosineSimilarityLoss) the
pair's similarity score."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from adaptlab.methods._sentence import SentenceMethod, SentenceParams
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Range


class CosineParams(SentenceParams):
    loss: Literal["cosent", "cosine"] = Field(
        "cosent", description="cosent: CoSENT, the pairs' cosines ranked as their scores are (only the order "
        "counts); cosine: CosineSimilarityLoss, the squared gap between cosine and score.")
    scale: float = Field(20.0, gt=0, description="CoSENT: inverse temperature of the cosine differences.")


@METHODS.register("embedding_cosine")
class EmbeddingCosine(SentenceMethod):
    Params = CosineParams
    formats = ("scored_pairs",)
    search_space = {"learning_rate": Range(low=1e-5, high=2e-4, log=True)}

    @classmethod
    def data_problems(cls, params: Any, data: Any) -> list[str]:
        if len(set(data.train.score or [])) < 2:
            return [f"{cls.name}: every training pair has the same score, so there is nothing to order; "
                    f"{cls.advice(data.format)}"]
        return []

    def columns(self, split: Any, data: Any) -> dict[str, list]:
        return {"sentence1": list(split.first), "sentence2": list(split.second),
                "score": [float(s) for s in split.score]}

    def loss(self, data: Any) -> torch.nn.Module:
        from sentence_transformers.sentence_transformer.losses import CoSENTLoss, CosineSimilarityLoss

        if self.params.loss == "cosent":
            return CoSENTLoss(self.model, scale=self.params.scale)
        return CosineSimilarityLoss(self.model)
