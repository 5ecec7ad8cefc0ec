"""Preference metrics from prediction records, with bootstrap intervals (seeded, 95%, percentile).

- ``preference_accuracy`` (primary): the share of pairs whose chosen response the rung scores above the rejected
  one. A tie is wrong: a rung that cannot tell the two apart has not preferred the chosen one.
- ``mean_margin``: the mean of score(chosen) - score(rejected). Its scale is the rung's own (summed
  log-probabilities, a DPO implicit reward, a reward model's scalar), so it compares a rung with itself (before and
  after training, across seeds), not rungs of different kinds.

Both are means over pairs, so the interval resamples pairs (:func:`~adaptlab.evaluation.stats.bootstrap_mean`).
"""

from __future__ import annotations

import numpy as np

from adaptlab.evaluation.stats import bootstrap_mean

N_RESAMPLES = 1000


def per_pair(records: list[dict]) -> dict[str, np.ndarray]:
    """Each metric's per-pair values."""
    return {"preference_accuracy": np.array([float(bool(r["correct"])) for r in records], dtype=np.float64),
            "mean_margin": np.array([float(r["score_chosen"]) - float(r["score_rejected"]) for r in records],
                                    dtype=np.float64)}


def score(records: list[dict]) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in per_pair(records).items()}


def evaluate(records: list[dict], seed: int) -> dict:
    values = per_pair(records)
    return {"metrics": {name: float(v.mean()) for name, v in values.items()},
            "interval": {name: list(bootstrap_mean(v, N_RESAMPLES, seed)) for name, v in values.items()},
            "ties": int(sum(float(r["score_chosen"]) == float(r["score_rejected"]) for r in records))}
