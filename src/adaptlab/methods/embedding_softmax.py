"""Labelled pairs (entailment-style): a classifier over (u, v, |u - v|) learns the pair's label and the
encoder with it (SBERT's NLI training). Only the encoder ships; the classifier is a training aid."""

from __future__ import annotations

from typing import Any

import torch

from adaptlab.methods._sentence import SentenceMethod, SentenceParams
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Range


@METHODS.register("embedding_softmax")
class EmbeddingSoftmax(SentenceMethod):
    Params = SentenceParams
    formats = ("labelled_pairs",)
    search_space = {"learning_rate": Range(low=1e-5, high=2e-4, log=True)}

    @classmethod
    def data_problems(cls, params: Any, data: Any) -> list[str]:
        seen = sorted(set(data.train.label or []))
        if len(seen) < 2:
            names = [data.label_names[i] for i in seen if 0 <= i < len(data.label_names)]
            return [f"{cls.name} needs pairs of at least 2 labels in the training split, found {names}; "
                    f"{cls.advice(data.format)}"]
        return []

    def columns(self, split: Any, data: Any) -> dict[str, list]:
        return {"sentence1": list(split.first), "sentence2": list(split.second),
                "label": [int(y) for y in split.label]}

    def loss(self, data: Any) -> torch.nn.Module:
        from sentence_transformers.sentence_transformer.losses import SoftmaxLoss

        return SoftmaxLoss(self.model, self.model.get_embedding_dimension(), len(data.label_names))
