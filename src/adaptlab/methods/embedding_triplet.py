"""TripletLoss: the anchor closer to its positive than to its negative by a margin. Triplets as given; for
retrieval data the negative is another row's document (drawn with the run's seed)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from adaptlab.methods._sentence import SentenceMethod, SentenceParams, drawn_negatives
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Range


class TripletParams(SentenceParams):
    distance: Literal["cosine", "euclidean"] = Field(
        "cosine", description="cosine: 1 - cosine similarity (in [0, 2]); euclidean: distance between the raw "
        "embeddings (sentence-transformers' default, whose scale depends on the model).")
    margin: float = Field(0.3, gt=0, description="How much closer the positive must be than the negative; in the "
                          "distance's units (0.3 suits cosine; sentence-transformers uses 5 with euclidean).")


@METHODS.register("embedding_triplet")
class EmbeddingTriplet(SentenceMethod):
    Params = TripletParams
    formats = ("triplets", "retrieval")
    search_space = {"learning_rate": Range(low=1e-5, high=2e-4, log=True), "margin": Range(low=0.1, high=1.0)}

    @classmethod
    def data_problems(cls, params: Any, data: Any) -> list[str]:
        if data.format == "retrieval" and len(set(data.train.second)) < 2:
            return [f"{cls.name} draws each query's negative from another row's document, but the training split "
                    f"has {len(set(data.train.second))} distinct document(s); use embedding_mnr or embedding_tsdae."]
        return []

    def columns(self, split: Any, data: Any) -> dict[str, list]:
        negatives = split.negative if data.format == "triplets" else drawn_negatives(split, self.ctx.seed)
        return {"anchor": list(split.first), "positive": list(split.second), "negative": list(negatives)}

    def loss(self, data: Any) -> torch.nn.Module:
        from sentence_transformers.sentence_transformer.losses import TripletDistanceMetric, TripletLoss

        metric = TripletDistanceMetric.COSINE if self.params.distance == "cosine" else TripletDistanceMetric.EUCLIDEAN
        return TripletLoss(self.model, distance_metric=metric, triplet_margin=self.params.margin)
