"""Paired significance tests of each rung against the best one, on the same test examples.

The report pairs two rungs' prediction records by example ``id`` (:func:`pair`) and asks the run's task for the
test (:meth:`adaptlab.tasks.Task.paired_test`): the task knows what a record's score is. The tests a task builds
its answer from are here: McNemar's test on per-example right/wrong (:func:`mcnemar_test`), a paired bootstrap on
per-example scores (:func:`bootstrap_test`) or on a corpus metric recomputed on resampled examples
(:func:`corpus_bootstrap_test`), and :func:`no_test` when the metric gives nothing to pair.

Every test is a dict: ``method`` (its name, None when there is no test), ``p_value`` (None when untested),
``detail`` (in words) and test-specific counts; the report adds ``n``, the number of paired examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

N_RESAMPLES = 1000
SEED = 0


def _key(r: dict, line: int) -> str:
    """A record's example id (its line number when it has none)."""
    return str(r["id"]) if r.get("id") is not None else f"line {line}"


def pair(best: list[dict], other: list[dict]) -> tuple[list[dict], list[dict]]:
    """The records of the examples both rungs predicted, in the best rung's order, matched by id (not by line)."""
    by_id = {_key(r, i): r for i, r in enumerate(other)}
    keys = [_key(r, i) for i, r in enumerate(best)]
    pairs = [(r, by_id[k]) for r, k in zip(best, keys, strict=True) if k in by_id]
    return [a for a, _ in pairs], [b for _, b in pairs]


def mcnemar_test(correct_best: Sequence[bool], correct_other: Sequence[bool]) -> dict:
    """McNemar's test on per-example correctness (exact binomial when there are few discordant examples)."""
    from adaptlab.evaluation import stats

    res = stats.mcnemar(list(correct_best), list(correct_other))
    return {
        "method": f"McNemar ({res['method']})", "p_value": res["p_value"], "b": res["b"], "c": res["c"],
        "detail": f"only the best right on {res['b']}, only this rung right on {res['c']}",
    }


def bootstrap_test(scores_best: Sequence[float], scores_other: Sequence[float]) -> dict:
    """A paired bootstrap on the mean of per-example scores."""
    from adaptlab.evaluation import stats

    n = len(scores_best)
    p = stats.paired_bootstrap_pvalue(list(scores_best), list(scores_other), n_resamples=N_RESAMPLES, seed=SEED)
    diff = sum(scores_other) / n - sum(scores_best) / n
    return {"method": "paired bootstrap (per-example mean)", "p_value": p, "detail": f"mean difference {diff:+.4g}"}


def corpus_bootstrap_test(stat: Callable[[Any], tuple[float, float]], n: int, metric: str) -> dict:
    """A paired bootstrap on a corpus metric: ``stat(indices)`` gives (best, other) on those resampled examples."""
    from adaptlab.evaluation import stats

    p = stats.paired_bootstrap_metric(stat, n, n_resamples=N_RESAMPLES, seed=SEED)
    return {"method": f"paired bootstrap ({metric})", "p_value": p, "detail": f"corpus {metric}"}


def no_test(why: str) -> dict:
    """No paired test, and why (the recommendation then compares intervals)."""
    return {"method": None, "p_value": None, "detail": why}
