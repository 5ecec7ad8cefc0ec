"""MultipleNegativesRankingLoss: each (anchor, positive) pair against every other positive of the batch (and the
hard negatives of triplets). The workhorse for retrieval; learns from positives only."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.errors import DataError
from adaptlab.methods._sentence import SentenceMethod, SentenceParams, positive_pairs
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Choice, Range


class MNRParams(SentenceParams):
    positive_score: float = Field(0.8, ge=0, le=1, description="Scored pairs: pairs scoring at least this (scores "
                                  "rescaled to [0, 1]) are the positives; the others are not used.")
    scale: float = Field(20.0, gt=0, description="Inverse temperature of the cosine similarities (the loss's scale).")
    no_duplicates: bool = Field(True, description="Keep repeated texts out of one batch (a repeated positive would "
                                "count as another row's negative).")


def positive_label_ids(ctx: RunContext, label_names: list[str]) -> set[int]:
    """Labelled pairs: the ids of the labels meaning "these match", as the task scores them (task.positive_labels,
    else the usual words); DataError when they can't be told."""
    from adaptlab.tasks.embedding.read import positive_labels

    return {label_names.index(n) for n in positive_labels(label_names, ctx.settings, "the training data")}


@METHODS.register("embedding_mnr")
class EmbeddingMNR(SentenceMethod):
    Params = MNRParams
    formats = ("retrieval", "triplets", "scored_pairs", "labelled_pairs")
    search_space = {"learning_rate": Range(low=1e-5, high=2e-4, log=True), "batch_size": Choice(values=(16, 32, 64))}

    @classmethod
    def check(cls, params: Any, ctx: RunContext, data: Any) -> list[str]:
        problems = super().check(params, ctx, data)
        if problems:
            return problems
        try:
            labels = positive_label_ids(ctx, data.label_names) if data.format == "labelled_pairs" else set()
        except DataError as e:
            return [f"{cls.name} learns from the matching pairs only: {e}"]
        first, _ = positive_pairs(data.train, data, params.positive_score, labels)
        if len(first) < 2:
            what = {"scored_pairs": f"pairs scoring >= {cls.name}.params.positive_score ({params.positive_score})",
                    "labelled_pairs": f"pairs labelled {sorted(data.label_names[i] for i in labels)}"}
            return [f"{cls.name} needs at least 2 matching pairs in the training split, found {len(first)} "
                    f"({what.get(data.format, 'rows')}); {cls.advice(data.format)}"]
        return []

    def columns(self, split: Any, data: Any) -> dict[str, list]:
        labels = positive_label_ids(self.ctx, data.label_names) if data.format == "labelled_pairs" else set()
        first, second = positive_pairs(split, data, self.params.positive_score, labels)
        columns = {"anchor": first, "positive": second}
        if data.format == "triplets":
            columns["negative"] = list(split.negative)
        return columns

    def loss(self, data: Any) -> torch.nn.Module:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(self.model, scale=self.params.scale)

    def trainer_args(self) -> dict[str, Any]:
        from sentence_transformers.base.sampler import BatchSamplers

        return {"batch_sampler": BatchSamplers.NO_DUPLICATES if self.params.no_duplicates else
                BatchSamplers.BATCH_SAMPLER}
