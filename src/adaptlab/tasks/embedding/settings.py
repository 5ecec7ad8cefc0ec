"""The ``task:`` settings of the sentence-embedding task, and which metrics each data format is scored with."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adaptlab.errors import did_you_mean
from adaptlab.evaluation.metrics import RANK_CUTOFFS
from adaptlab.specs import Label
from adaptlab.tasks.embedding.data import FORMATS

#: The metrics of each format that take no cutoff; retrieval's are recall/mrr/ndcg at each k (:func:`metric_names`).
PAIR_METRICS = {
    "scored_pairs": ("spearman", "pearson"),
    "labelled_pairs": ("average_precision", "roc_auc", "best_accuracy"),
    "triplets": ("triplet_accuracy",),
}
RANKING_METRICS = ("recall", "mrr", "ndcg")
#: The metric that ranks the rungs when task.primary_metric is not set.
DEFAULT_PRIMARY = {"scored_pairs": "spearman", "labelled_pairs": "average_precision",
                   "triplets": "triplet_accuracy", "retrieval": "mrr_at_10"}
#: Label values read as "the two texts belong together" when task.positive_labels is not set.
POSITIVE_WORDS = ("entailment", "paraphrase", "duplicate", "similar", "same", "positive", "match", "true", "yes", "1")


def metric_names(fmt: str, k: list[int] | tuple[int, ...] = (1, 5, 10)) -> list[str]:
    """The metrics a format is scored with, in report order (retrieval: recall, MRR and nDCG at each cutoff)."""
    if fmt == "retrieval":
        return [f"{m}_at_{c}" for m in RANKING_METRICS for c in k]
    return list(PAIR_METRICS[fmt])


ALL_METRICS = sorted({*(m for names in PAIR_METRICS.values() for m in names),
                      *metric_names("retrieval", RANK_CUTOFFS)})


class EmbeddingSettings(BaseModel):
    """``task:`` settings of sentence embeddings. Columns left unset are detected (see ``read.COLUMN_SETS``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["embedding"] = "embedding"
    format: Literal["auto", "scored_pairs", "labelled_pairs", "triplets", "retrieval"] = Field(
        "auto", description="Shape of the rows: scored_pairs (two texts + a similarity score), labelled_pairs (two "
        "texts + a class such as entailment), triplets (anchor, positive, negative) or retrieval (a query + its "
        "relevant document). auto: the first known set of column names present (sentence1/sentence2/score, "
        "premise/hypothesis/label, anchor/positive/negative, query/document, context/reply, ...).")
    first_column: str | None = Field(None, description="Sentence 1 / anchor / query column (default: detected).")
    second_column: str | None = Field(None, description="Sentence 2 / positive / relevant document column "
                                      "(default: detected).")
    negative_column: str | None = Field(None, description="Triplets: the negative text column (default: negative).")
    score_column: str | None = Field(None, description="Scored pairs: the similarity score column (default: "
                                     "score or similarity).")
    label_column: str | None = Field(None, description="Labelled pairs: the class column (default: label or "
                                     "is_duplicate).")
    score_range: tuple[float, float] = Field(
        (0.0, 1.0), description="Scored pairs: the [low, high] range the scores are on (e.g. [0, 5] for STS-B); "
        "they are rescaled to [0, 1], and a score outside the range is a data error naming its row.")
    positive_labels: list[Label] | None = Field(
        None, description="Labelled pairs: the labels meaning the texts belong together (default: the labels among "
        f"{', '.join(POSITIVE_WORDS)}).")
    corpus: str | None = Field(
        None, description="Retrieval: a file of extra documents (an id column and a text column) searched with each "
        "split's own documents; needed by relevant_id_column.")
    corpus_id_column: str = Field("id", description="Retrieval: the id column of the corpus file.")
    corpus_text_column: str = Field("text", description="Retrieval: the text column of the corpus file.")
    relevant_id_column: str | None = Field(
        None, description="Retrieval: a column giving each query's relevant document by its corpus id (one id or a "
        "list) instead of its text; every id must be in the corpus file.")
    k: list[int] = Field([1, 5, 10], min_length=1, description="Retrieval: the cutoffs of recall@k, MRR@k and "
                         f"nDCG@k, each one of {', '.join(map(str, RANK_CUTOFFS))}.")
    primary_metric: str | None = Field(
        None, description="The metric that ranks the rungs (default: spearman for scored pairs, average_precision "
        "for labelled pairs, triplet_accuracy for triplets, mrr_at_10 for retrieval).")

    @field_validator("score_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(x) for x in v) or v[0] >= v[1]:
            raise ValueError(f"give [low, high] with low < high, e.g. [0, 5]; got {list(v)}")
        return v

    @field_validator("k")
    @classmethod
    def _cutoffs(cls, v: list[int]) -> list[int]:
        bad = [c for c in v if c not in RANK_CUTOFFS]
        if bad:
            raise ValueError(f"cutoff {bad[0]} is not one of {', '.join(map(str, RANK_CUTOFFS))}")
        return sorted(set(v))

    @field_validator("primary_metric")
    @classmethod
    def _known_metric(cls, v: str | None) -> str | None:
        if v is not None and v not in ALL_METRICS:
            raise ValueError(f"unknown embedding metric.{did_you_mean(v, ALL_METRICS)} Choose one of: "
                             f"{', '.join(ALL_METRICS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EmbeddingSettings:
        if self.relevant_id_column and not self.corpus:
            raise ValueError("relevant_id_column names documents by their corpus id, so give the corpus file too: "
                             "task.corpus")
        if self.relevant_id_column and self.format not in ("auto", "retrieval"):
            raise ValueError(f"relevant_id_column is for retrieval data, but format is {self.format}")
        problem = primary_problem(self.primary_metric, self.format, self.k) if self.format != "auto" else None
        if problem:
            raise ValueError(problem)
        return self


def primary_problem(metric: str | None, fmt: str, k: list[int]) -> str | None:
    """Why ``metric`` can't rank rungs on ``fmt`` data scored at cutoffs ``k``, or None when it can."""
    if metric is None or metric in metric_names(fmt, k):
        return None
    if fmt == "retrieval" and metric in metric_names(fmt, RANK_CUTOFFS):
        return (f"primary_metric {metric} needs its cutoff in task.k (now {k}); add it, e.g. "
                f"k: {sorted({*k, int(metric.rsplit('_', 1)[1])})}")
    return (f"primary_metric {metric} is not a metric of {fmt} data; choose one of: "
            f"{', '.join(metric_names(fmt, k))}")


assert set(DEFAULT_PRIMARY) == set(FORMATS)
