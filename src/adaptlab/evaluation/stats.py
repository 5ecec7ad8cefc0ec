"""Confidence intervals and significance tests for comparing rungs on one test split.

All resampling goes through :func:`resample_indices`: resample ``r`` is ``n`` indices drawn with replacement
from ``numpy.random.default_rng(seed)``, one row per resample in order. So every function here is deterministic
given its seed, and two functions called with the same ``(n, n_resamples, seed)`` see the same resamples
(e.g. :func:`bootstrap_interval` with a macro-F1 statistic reproduces :func:`bootstrap_classification`).

Intervals use the percentile method: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
statistic over the resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from adaptlab.errors import DataError

CLASSIFICATION_METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
_MAX_CELLS = 1 << 22  # indices held at once when vectorising (about 32 MB of int64)


def resample_indices(n: int, n_resamples: int, seed: int = 0, chunk: int | None = None) -> Iterator[np.ndarray]:
    """Yield bootstrap index arrays of shape ``(k, n)`` (k <= chunk) until ``n_resamples`` rows are produced.

    Rows are drawn one at a time, so the resamples do not depend on ``chunk``.
    """
    if n <= 0:
        raise DataError("cannot bootstrap over 0 examples: the evaluation split is empty.")
    if n_resamples <= 0:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, _MAX_CELLS // n)
    done = 0
    while done < n_resamples:
        k = min(chunk, n_resamples - done)
        yield np.stack([rng.integers(0, n, size=n) for _ in range(k)])
        done += k


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile-method interval of bootstrap ``values``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(np.asarray(values, dtype=np.float64), [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n: int,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval for any statistic of ``n`` examples.

    ``statistic`` receives an array of ``n`` example indices (drawn with replacement) and returns a float, e.g.
    ``lambda idx: bleu([preds[i] for i in idx], [refs[i] for i in idx])``.
    """
    values = [statistic(row) for rows in resample_indices(n, n_resamples, seed) for row in rows]
    return percentile_interval(np.array(values, dtype=np.float64), confidence)


def bootstrap_mean(
    per_example_scores: Sequence[float],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of per-example scores (e.g. ROUGE, exact match)."""
    scores = np.asarray(per_example_scores, dtype=np.float64)
    means = np.concatenate([scores[rows].mean(axis=1) for rows in resample_indices(len(scores), n_resamples, seed)])
    return percentile_interval(means, confidence)


def classification_resample_scores(
    references: Sequence[int], predictions: Sequence[int], num_labels: int, indices: np.ndarray
) -> dict[str, np.ndarray]:
    """Accuracy and macro precision/recall/F1 for each row of ``indices`` (shape ``(k, n)``), vectorised.

    One bincount builds all ``k`` confusion matrices; the scores match scikit-learn with
    ``labels=range(num_labels)``, ``average="macro"`` and ``zero_division=0``.
    """
    refs = np.asarray(references, dtype=np.int64)
    preds = np.asarray(predictions, dtype=np.int64)
    indices = np.atleast_2d(indices)
    k, size = indices.shape
    cells = num_labels * num_labels
    codes = refs[indices] * num_labels + preds[indices] + (np.arange(k) * cells)[:, None]
    cm = np.bincount(codes.ravel(), minlength=k * cells).reshape(k, num_labels, num_labels)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    predicted = cm.sum(axis=1)  # column sums: how often each label was predicted
    actual = cm.sum(axis=2)  # row sums: how often each label is the reference

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    return {
        "accuracy": tp.sum(axis=1) / size,
        "macro_precision": ratio(tp, predicted).mean(axis=1),
        "macro_recall": ratio(tp, actual).mean(axis=1),
        "macro_f1": ratio(2 * tp, predicted + actual).mean(axis=1),
    }


def bootstrap_classification(
    references: Sequence[int],
    predictions: Sequence[int],
    num_labels: int,
    metric: str = "macro_f1",
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval for accuracy or a macro metric, via per-resample confusion matrices."""
    if metric not in CLASSIFICATION_METRICS:
        raise ValueError(f"metric must be one of {', '.join(CLASSIFICATION_METRICS)}, got '{metric}'")
    if len(references) != len(predictions):
        raise DataError(f"{len(predictions)} predictions but {len(references)} references; they must pair up.")
    values = np.concatenate(
        [
            classification_resample_scores(references, predictions, num_labels, rows)[metric]
            for rows in resample_indices(len(references), n_resamples, seed)
        ]
    )
    return percentile_interval(values, confidence)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """McNemar's test for two classifiers scored on the same examples.

    ``b`` counts examples only A gets right, ``c`` those only B gets right. When ``b + c < 25`` the exact
    two-sided binomial test of ``min(b, c)`` successes in ``b + c`` trials at p = 0.5 is used (statistic =
    ``min(b, c)``); otherwise the chi-square statistic with continuity correction ``(|b - c| - 1)^2 / (b + c)``
    on 1 degree of freedom.
    """
    from scipy import stats

    a = np.asarray(correct_a, dtype=bool)
    b_arr = np.asarray(correct_b, dtype=bool)
    if a.shape != b_arr.shape:
        raise DataError(f"correct_a has {a.size} examples but correct_b has {b_arr.size}; they must pair up.")
    b = int(np.sum(a & ~b_arr))
    c = int(np.sum(~a & b_arr))
    if b + c == 0:
        return {"statistic": 0.0, "p_value": 1.0, "b": b, "c": c, "method": "exact binomial"}
    if b + c < 25:
        p = stats.binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
        return {"statistic": float(min(b, c)), "p_value": float(p), "b": b, "c": c, "method": "exact binomial"}
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return {
        "statistic": float(statistic),
        "p_value": float(stats.chi2.sf(statistic, df=1)),
        "b": b,
        "c": c,
        "method": "chi-square with continuity correction",
    }


def _shift_pvalue(observed: float, resampled: np.ndarray) -> float:
    """Two-sided p-value from bootstrap differences shifted to the null (see :func:`paired_bootstrap_pvalue`)."""
    extreme = np.abs(resampled - observed) >= abs(observed) - 1e-12
    return float((extreme.sum() + 1) / (len(resampled) + 1))


def paired_bootstrap_pvalue(
    scores_a: Sequence[float], scores_b: Sequence[float], n_resamples: int = 1000, seed: int = 0
) -> float:
    """Two-sided paired bootstrap test that systems A and B have the same mean per-example score.

    Method: with observed difference ``d = mean(a - b)``, resample the paired examples with replacement and
    compute ``d*`` per resample. Centring the bootstrap distribution on zero (``d* - d``) approximates the
    distribution of the difference under the null hypothesis of no difference, so the p-value is the share of
    resamples with ``|d* - d| >= |d|`` (Berg-Kirkpatrick et al., 2012, made two-sided), computed as
    ``(count + 1) / (n_resamples + 1)`` so it is never exactly 0. Identical systems give p = 1.
    """
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"scores_a has {a.size} examples but scores_b has {b.size}; they must pair up.")
    diff = a - b
    resampled = np.concatenate([diff[rows].mean(axis=1) for rows in resample_indices(len(diff), n_resamples, seed)])
    return _shift_pvalue(float(diff.mean()), resampled)


def paired_bootstrap_metric(
    statistic_a_b: Callable[[np.ndarray], tuple[float, float]],
    n: int,
    n_resamples: int = 1000,
    seed: int = 0,
) -> float:
    """Two-sided paired bootstrap p-value for a corpus-level metric (BLEU, macro-F1, ...).

    ``statistic_a_b(idx)`` returns ``(metric_a, metric_b)`` computed on the examples ``idx``; the observed
    difference uses all ``n`` examples. Same method as :func:`paired_bootstrap_pvalue`, with the metric
    difference in place of the mean difference.
    """
    observed_a, observed_b = statistic_a_b(np.arange(n))
    diffs = []
    for rows in resample_indices(n, n_resamples, seed):
        for row in rows:
            value_a, value_b = statistic_a_b(row)
            diffs.append(value_a - value_b)
    return _shift_pvalue(observed_a - observed_b, np.array(diffs, dtype=np.float64))
