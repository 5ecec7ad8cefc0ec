"""Bootstrap intervals and significance tests against scikit-learn and hand-computed values."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from adaptlab.errors import DataError
from adaptlab.evaluation.stats import (
    bootstrap_classification,
    bootstrap_interval,
    bootstrap_mean,
    classification_resample_scores,
    mcnemar,
    paired_bootstrap_metric,
    paired_bootstrap_pvalue,
    percentile_interval,
    resample_indices,
)


def synthetic(n: int, num_labels: int, seed: int = 1, acc: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, num_labels, n)
    preds = np.where(rng.random(n) < acc, refs, rng.integers(0, num_labels, n))
    return refs, preds


def sklearn_scores(refs: np.ndarray, preds: np.ndarray, num_labels: int) -> dict[str, float]:
    p, r, f, _ = precision_recall_fscore_support(
        refs, preds, labels=list(range(num_labels)), average="macro", zero_division=0
    )
    return {"accuracy": accuracy_score(refs, preds), "macro_precision": p, "macro_recall": r, "macro_f1": f}


def test_percentile_interval_by_hand():
    assert percentile_interval(np.arange(101), confidence=0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval([1.0, 3.0], confidence=0.5) == (1.5, 2.5)  # linear interpolation


def test_resamples_do_not_depend_on_chunking_and_follow_the_seed():
    a = np.concatenate(list(resample_indices(7, 10, seed=3, chunk=1)))
    b = np.concatenate(list(resample_indices(7, 10, seed=3, chunk=4)))
    c = np.concatenate(list(resample_indices(7, 10, seed=4)))
    assert a.shape == (10, 7) and a.min() >= 0 and a.max() < 7
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_vectorised_scores_agree_with_sklearn_on_each_resample():
    # 4 labels over 12 examples: some resamples miss a class in references or predictions (zero_division path).
    refs, preds = synthetic(12, 4, acc=0.5)
    rows = np.concatenate(list(resample_indices(12, 20, seed=0)))
    vectorised = classification_resample_scores(refs, preds, 4, rows)
    for i, row in enumerate(rows):
        expected = sklearn_scores(refs[row], preds[row], 4)
        for metric, value in expected.items():
            assert vectorised[metric][i] == pytest.approx(value), (metric, i)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "macro_precision", "macro_recall"])
def test_bootstrap_classification_matches_generic_bootstrap_with_sklearn(metric):
    refs, preds = synthetic(60, 3)
    fast = bootstrap_classification(refs, preds, 3, metric=metric, n_resamples=40, seed=5)
    slow = bootstrap_interval(
        lambda idx: sklearn_scores(refs[idx], preds[idx], 3)[metric], n=60, n_resamples=40, seed=5
    )
    assert fast == pytest.approx(slow)
    point = sklearn_scores(refs, preds, 3)[metric]
    assert fast[0] < point < fast[1]


def test_bootstrap_classification_is_fast_and_deterministic():
    refs, preds = synthetic(3000, 5)
    start = time.perf_counter()
    first = bootstrap_classification(refs, preds, 5, n_resamples=1000, seed=0)
    assert time.perf_counter() - start < 1.0
    assert bootstrap_classification(refs, preds, 5, n_resamples=1000, seed=0) == first
    assert bootstrap_classification(refs, preds, 5, n_resamples=1000, seed=1) != first
    assert 0 < first[1] - first[0] < 0.1


def test_bootstrap_classification_rejects_unknown_metric_and_empty_split():
    with pytest.raises(ValueError, match="macro_f1"):
        bootstrap_classification([0], [0], 2, metric="f1")
    with pytest.raises(DataError, match="empty"):
        bootstrap_classification([], [], 2)


def test_bootstrap_mean():
    assert bootstrap_mean([0.3] * 50) == pytest.approx((0.3, 0.3))
    scores = np.random.default_rng(0).random(200)
    low, high = bootstrap_mean(scores, n_resamples=300, seed=2)
    assert (low, high) == pytest.approx(bootstrap_interval(lambda i: scores[i].mean(), 200, n_resamples=300, seed=2))
    # roughly mean +- 1.96 * sd / sqrt(n) for a large sample
    half = 1.96 * scores.std() / math.sqrt(200)
    assert low == pytest.approx(scores.mean() - half, abs=0.01)
    assert high == pytest.approx(scores.mean() + half, abs=0.01)


# ----------------------------------------------------------------------------------------------------- McNemar


def paired(b: int, c: int, both: int = 5, neither: int = 3) -> tuple[list[bool], list[bool]]:
    """Correctness vectors with b examples only A gets right and c only B gets right."""
    a = [True] * b + [False] * c + [True] * both + [False] * neither
    bb = [False] * b + [True] * c + [True] * both + [False] * neither
    return a, bb


def test_mcnemar_exact_binomial_for_few_discordant_pairs():
    out = mcnemar(*paired(1, 6))
    # two-sided: 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * (1 + 7) / 128
    assert out == {"statistic": 1.0, "p_value": pytest.approx(0.125), "b": 1, "c": 6, "method": "exact binomial"}
    # b + c = 24 is still exact
    out = mcnemar(*paired(4, 20))
    assert out["method"] == "exact binomial"
    assert out["p_value"] == pytest.approx(2 * sum(math.comb(24, k) for k in range(5)) / 2**24)
    assert mcnemar(*paired(3, 3))["p_value"] == pytest.approx(1.0)
    assert mcnemar(*paired(0, 0))["p_value"] == 1.0


def test_mcnemar_chi_square_with_continuity_correction():
    # b = 10, c = 20: (|10 - 20| - 1)^2 / 30 = 2.7; chi-square(1) tail = erfc(sqrt(2.7 / 2)).
    out = mcnemar(*paired(10, 20))
    assert out["method"] == "chi-square with continuity correction"
    assert out["statistic"] == pytest.approx(2.7)
    assert out["p_value"] == pytest.approx(math.erfc(math.sqrt(2.7 / 2)))
    # b + c = 25 switches to chi-square: (15 - 1)^2 / 25 = 7.84
    assert mcnemar(*paired(5, 20))["p_value"] == pytest.approx(math.erfc(math.sqrt(7.84 / 2)))


def test_mcnemar_rejects_unpaired_inputs():
    with pytest.raises(DataError, match="pair up"):
        mcnemar([True, False], [True])


# ---------------------------------------------------------------------------------------------- paired bootstrap


def test_paired_bootstrap_identical_systems_give_p_one():
    scores = np.random.default_rng(0).random(50)
    assert paired_bootstrap_pvalue(scores, scores) == 1.0


def test_paired_bootstrap_clear_winner_gives_smallest_p():
    a = np.ones(100)
    b = np.r_[np.zeros(90), np.ones(10)]
    assert paired_bootstrap_pvalue(a, b, n_resamples=1000) == pytest.approx(1 / 1001)


def test_paired_bootstrap_pvalue_tracks_normal_approximation_and_is_symmetric():
    # differences of mean 0.25 and sd ~1 over 100 examples: z ~ 2.5, two-sided p ~ 0.012
    rng = np.random.default_rng(7)
    diff = rng.normal(size=100)
    diff = (diff - diff.mean()) / diff.std() + 0.25
    b = rng.random(100)
    a = b + diff
    expected = math.erfc(0.25 / (diff.std() / math.sqrt(100)) / math.sqrt(2))
    p = paired_bootstrap_pvalue(a, b, n_resamples=2000, seed=0)
    assert p == pytest.approx(expected, abs=0.01)
    assert paired_bootstrap_pvalue(b, a, n_resamples=2000, seed=0) == pytest.approx(p)
    # a small difference relative to the noise is not significant
    assert paired_bootstrap_pvalue(b + diff - 0.22, b, n_resamples=2000) > 0.5


def test_paired_bootstrap_metric_reduces_to_mean_version():
    rng = np.random.default_rng(3)
    a, b = rng.random(80), rng.random(80) * 0.9
    p_metric = paired_bootstrap_metric(lambda idx: (a[idx].mean(), b[idx].mean()), 80, n_resamples=300, seed=4)
    assert p_metric == pytest.approx(paired_bootstrap_pvalue(a, b, n_resamples=300, seed=4))
    assert 0 < p_metric < 1
