"""Entity-level scores with seqeval, intervals and paired tests by resampling sentences.

An entity counts as found only when its type and its exact word span both match (seqeval's default, conlleval's
rule). Micro scores pool every entity; macro averages the per-type F1 over the entity types of the label set.
Intervals and paired tests resample whole sentences, so they use per-sentence true-positive / false-positive /
false-negative counts per type, taken from the same entity extraction seqeval uses.
"""

from __future__ import annotations

import numpy as np

from adaptlab.evaluation.stats import paired_bootstrap_metric, percentile_interval, resample_indices

N_RESAMPLES = 1000


def entity_counts(refs: list[list[str]], preds: list[list[str]], types: list[str]) -> np.ndarray:
    """Array (sentences, types, 3) of true positives, false positives and false negatives."""
    from seqeval.metrics.sequence_labeling import get_entities

    index = {t: k for k, t in enumerate(types)}
    counts = np.zeros((len(refs), len(types), 3), dtype=np.int64)
    for s, (ref, pred) in enumerate(zip(refs, preds)):
        gold = {(t, a, b) for t, a, b in get_entities(ref)}
        found = {(t, a, b) for t, a, b in get_entities(pred)}
        for kind, _, _ in gold & found:
            counts[s, index[kind], 0] += 1
        for kind, _, _ in found - gold:
            if kind in index:
                counts[s, index[kind], 1] += 1
        for kind, _, _ in gold - found:
            counts[s, index[kind], 2] += 1
    return counts


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        r = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return p, r, f


def scores_from_counts(totals: np.ndarray) -> dict[str, float]:
    """Micro and macro P/R/F1 from (..., types, 3) summed counts (leading axes are resamples)."""
    micro = _prf(*(totals.sum(axis=-2)[..., k] for k in range(3)))
    macro = _prf(*(totals[..., k] for k in range(3)))
    return {
        "entity_micro_precision": micro[0], "entity_micro_recall": micro[1], "entity_micro_f1": micro[2],
        "entity_macro_f1": macro[2].mean(axis=-1),
    }


def entity_scores(refs: list[list[str]], preds: list[list[str]], types: list[str],
                  counts: np.ndarray | None = None) -> dict[str, float]:
    """seqeval's micro scores, the macro F1 over ``types`` and token accuracy, without intervals (``counts``: the
    :func:`entity_counts` of these sentences, when already computed)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    metrics = {
        "entity_micro_precision": float(precision_score(refs, preds, average="micro", zero_division=0)),
        "entity_micro_recall": float(recall_score(refs, preds, average="micro", zero_division=0)),
        "entity_micro_f1": float(f1_score(refs, preds, average="micro", zero_division=0)),
    }
    counts = entity_counts(refs, preds, types) if counts is None else counts
    per_type_f1 = _prf(*(counts.sum(axis=0)[:, k] for k in range(3)))[2]
    metrics["entity_macro_f1"] = float(per_type_f1.mean()) if len(types) else 0.0
    metrics["token_accuracy"] = _token_accuracy(refs, preds)
    return metrics


def entity_metrics(refs: list[list[str]], preds: list[list[str]], types: list[str], seed: int) -> dict:
    """seqeval's micro/macro scores and per-type report, with sentence-bootstrap intervals."""
    from seqeval.metrics import classification_report

    counts = entity_counts(refs, preds, types)
    metrics = entity_scores(refs, preds, types, counts)
    report = classification_report(refs, preds, output_dict=True, zero_division=0)
    per_type = {t: {"precision": float(report[t]["precision"]), "recall": float(report[t]["recall"]),
                    "f1": float(report[t]["f1-score"]), "support": int(report[t]["support"])}
                for t in types if t in report}
    per_type.update({t: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for t in types if t not in report})
    return {"metrics": metrics, "interval": intervals(counts, seed), "per_type": per_type,
            "type_confusion": type_confusion(refs, preds, types)}


def _token_accuracy(refs: list[list[str]], preds: list[list[str]]) -> float:
    pairs = [(a, b) for ref, pred in zip(refs, preds) for a, b in zip(ref, pred)]
    return float(np.mean([a == b for a, b in pairs])) if pairs else 0.0


def intervals(counts: np.ndarray, seed: int) -> dict[str, list[float]]:
    """95% percentile intervals of the entity scores over sentence resamples."""
    values: dict[str, list[np.ndarray]] = {}
    for rows in resample_indices(len(counts), N_RESAMPLES, seed):
        for name, v in scores_from_counts(counts[rows].sum(axis=1)).items():
            values.setdefault(name, []).append(np.atleast_1d(v))
    return {name: list(percentile_interval(np.concatenate(v))) for name, v in values.items()}


def paired_pvalue(counts_a: np.ndarray, counts_b: np.ndarray, metric: str, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value over sentences that two systems have the same entity ``metric``."""
    def statistic(idx: np.ndarray) -> tuple[float, float]:
        a = scores_from_counts(counts_a[idx].sum(axis=0))[metric]
        b = scores_from_counts(counts_b[idx].sum(axis=0))[metric]
        return float(a), float(b)

    return paired_bootstrap_metric(statistic, len(counts_a), N_RESAMPLES, seed)


def type_confusion(refs: list[list[str]], preds: list[list[str]], types: list[str]) -> dict:
    """Gold entity type (rows, plus 'none' for spurious predictions) against the type predicted over the same
    words (columns, plus 'none' for a missed entity). Exact-span matches and overlaps both count."""
    from seqeval.metrics.sequence_labeling import get_entities

    names = [*types, "none"]
    index = {t: k for k, t in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for ref, pred in zip(refs, preds):
        gold, found = get_entities(ref), get_entities(pred)
        for kind, a, b in gold:
            hit = [k for k, c, d in found if c <= b and d >= a]
            matrix[index.get(kind, -1), index.get(hit[0], -1) if hit else -1] += 1
        for kind, c, d in found:
            if not any(a <= d and b >= c for _, a, b in gold):
                matrix[-1, index.get(kind, -1)] += 1
    return {"labels": names, "matrix": matrix.tolist()}
