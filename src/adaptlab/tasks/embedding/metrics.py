"""Sentence-embedding metrics from prediction records, with bootstrap intervals (seeded, 95%, percentile).

- Scored pairs: Spearman (primary) and Pearson correlation of the pair's cosine with its gold score (scipy). A rung
  whose cosines are all equal has no correlation and scores 0. Intervals resample pairs; Spearman on a resample is
  the Pearson correlation of its average ranks, exactly as scipy defines it.
- Labelled pairs: how well the cosine separates pairs whose label is positive (task.positive_labels) from the
  rest, with no threshold to choose: average precision (primary; scikit-learn) and ROC AUC; their intervals take
  :data:`CORPUS_RESAMPLES` resamples (each is a scikit-learn call). ``best_accuracy`` is
  the accuracy at the cosine threshold that is best on these very pairs (reported with the threshold, as
  sentence-transformers' BinaryClassificationEvaluator does): optimistic, so it never ranks rungs by default.
- Triplets: the share of triplets whose anchor is closer to the positive than to the negative (a tie is wrong).
- Retrieval: per query, from the 1-based ranks of its relevant documents among the whole corpus (a document tied
  with the relevant one counts as ranked above it): recall@k (share of its relevant documents in the top k), MRR@k
  (1 / rank of the first relevant one, 0 below k) and nDCG@k (binary relevance, log2 discount); the metric is the
  mean over queries and the interval resamples queries. The per-query values are in each record, so
  :func:`evaluate` and the paired tests work from the records alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from adaptlab.evaluation.stats import bootstrap_mean, percentile_interval, resample_indices
from adaptlab.tasks.embedding.settings import PAIR_METRICS, metric_names

N_RESAMPLES = 1000
#: Resamples of the labelled-pair intervals: each one calls scikit-learn (as generation does for BLEU and chrF).
CORPUS_RESAMPLES = 200


# -- scored pairs -------------------------------------------------------------------------------------------------


def correlations(predicted: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson correlation (0 when either side is constant: no correlation to measure)."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(predicted, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": 0.0, "pearson": 0.0}
    return {"spearman": float(spearmanr(x, y).statistic), "pearson": float(pearsonr(x, y).statistic)}


def row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``x`` with the same row of ``y`` (shape (k, n)); NaN for a constant row."""
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (xc * yc).sum(axis=1) / denominator, np.nan)


def correlation_resamples(predicted: np.ndarray, reference: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Spearman and Pearson on each resample (rows of ``idx``), vectorised; NaN where a resample is constant."""
    from scipy.stats import rankdata

    x, y = predicted[idx], reference[idx]
    return {"spearman": row_pearson(rankdata(x, axis=1), rankdata(y, axis=1)), "pearson": row_pearson(x, y)}


# -- labelled pairs -----------------------------------------------------------------------------------------------


def separation(cosines: Sequence[float], positive: Sequence[bool]) -> dict[str, float]:
    """Average precision and ROC AUC of the cosine for the positive pairs, the best accuracy over thresholds and
    that threshold (a pair at or above it is called positive; None when calling every pair negative is best); NaN
    scores when the pairs are all positive or all negative."""
    from sklearn.metrics import auc, average_precision_score, roc_curve

    x, y = np.asarray(cosines, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos = int(y.sum())
    if n_pos in (0, len(y)):
        return {"average_precision": math.nan, "roc_auc": math.nan, "best_accuracy": math.nan, "threshold": None}
    fpr, tpr, thresholds = roc_curve(y, x, drop_intermediate=False)
    accuracy = (tpr * n_pos + (1 - fpr) * (len(y) - n_pos)) / len(y)
    best = int(np.argmax(accuracy))
    threshold = float(thresholds[best]) if math.isfinite(thresholds[best]) else None  # None: all called negative
    return {"average_precision": float(average_precision_score(y, x)), "roc_auc": float(auc(fpr, tpr)),
            "best_accuracy": float(accuracy[best]), "threshold": threshold}


# -- retrieval ----------------------------------------------------------------------------------------------------


def ranking_values(ranks: Sequence[int], k: Sequence[int]) -> dict[str, float]:
    """recall@k, MRR@k and nDCG@k of one query from the 1-based ranks of its relevant documents."""
    r = np.asarray(ranks, dtype=np.float64)
    out = {}
    for c in k:
        top = r[r <= c]
        ideal = (1.0 / np.log2(np.arange(2, min(len(r), c) + 2))).sum()
        out[f"recall_at_{c}"] = float(len(top) / len(r))
        out[f"mrr_at_{c}"] = float(1.0 / top.min()) if len(top) else 0.0
        out[f"ndcg_at_{c}"] = float((1.0 / np.log2(top + 1)).sum() / ideal)
    return {name: out[name] for name in metric_names("retrieval", k)}


# -- from records -------------------------------------------------------------------------------------------------


def score(records: list[dict], fmt: str) -> dict[str, float]:
    """The format's metrics over ``records`` (no intervals)."""
    if fmt == "scored_pairs":
        return correlations(_column(records, "prediction"), _column(records, "reference"))
    if fmt == "labelled_pairs":
        found = separation(_column(records, "prediction"), [bool(r["positive"]) for r in records])
        return {name: found[name] for name in PAIR_METRICS[fmt]}
    return per_record_means(records)


def evaluate(records: list[dict], fmt: str, seed: int) -> dict:
    """{"metrics", "interval", ...}: the format's metrics, a bootstrap interval for each, and what else explains
    them (labelled pairs: the best-accuracy threshold; retrieval: the corpus size)."""
    metrics = score(records, fmt)
    if fmt == "scored_pairs":
        x, y = np.asarray(_column(records, "prediction")), np.asarray(_column(records, "reference"))
        interval = _resampled(lambda idx: correlation_resamples(x, y, idx), len(records), seed)
        return {"metrics": metrics, "interval": interval}
    if fmt == "labelled_pairs":
        x, y = np.asarray(_column(records, "prediction")), np.asarray([bool(r["positive"]) for r in records])

        def per_row(idx: np.ndarray) -> dict[str, np.ndarray]:
            rows = [separation(x[i], y[i]) for i in idx]
            return {name: np.array([r[name] for r in rows]) for name in PAIR_METRICS[fmt]}

        threshold = separation(x, y)["threshold"]
        interval = _resampled(per_row, len(records), seed, CORPUS_RESAMPLES)
        return {"metrics": metrics, "interval": interval, "threshold": threshold}
    interval = {name: list(bootstrap_mean([r["metrics"][name] for r in records], N_RESAMPLES, seed))
                for name in metrics}
    extra = {"corpus_size": max(int(r["corpus_size"]) for r in records)} if fmt == "retrieval" else {}
    return {"metrics": metrics, "interval": interval, **extra}


def per_record_means(records: list[dict]) -> dict[str, float]:
    """The mean of each per-record metric (``record["metrics"]``: triplets and retrieval queries)."""
    names = list(records[0]["metrics"]) if records else []
    return {name: float(np.mean([r["metrics"][name] for r in records])) for name in names}


def _column(records: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in records]


def _resampled(stat, n: int, seed: int, n_resamples: int = N_RESAMPLES) -> dict[str, list[float]]:
    """Percentile intervals of each metric ``stat(idx)`` returns for a block of resamples (rows of ``idx``);
    resamples where a metric is undefined (NaN) are left out, and a metric undefined on most has no interval."""
    values: dict[str, list[np.ndarray]] = {}
    for idx in resample_indices(n, n_resamples, seed):
        for name, v in stat(idx).items():
            values.setdefault(name, []).append(v)
    out = {}
    for name, parts in values.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        if len(v) >= n_resamples // 2:
            out[name] = list(percentile_interval(v))
    return out
