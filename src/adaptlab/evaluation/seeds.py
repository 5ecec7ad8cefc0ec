"""Training seeds: a rung's spread over seeds, and when two rungs differ across seeds and test examples.

With ``seeds: [0, 1, 2]`` each training rung is repeated per seed on the same split (see
:func:`adaptlab.pipeline.run_configured`). :func:`summarize` is the record metrics.json keeps (``seeds``);
:func:`combine` is the rule the report applies: two rungs are called different only when the paired test on the
same test examples says so for *every* seed, in the same direction (the larger of the per-seed p-values, or 1 when
the sign flips or a seed is missing). Pure functions, unit-tested on constructed values.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

RULE = ("With several training seeds, two rungs count as different only when the paired test on the test examples "
        "finds the difference on every seed and it points the same way on each (the largest per-seed p-value is "
        "used); otherwise the difference is within what a seed changes.")


def summarize(values: Mapping[int, float | None], dirs: Mapping[int, str]) -> dict:
    """Per-seed values (None: that seed's run failed) with mean, sample standard deviation, min and max."""
    ok = [float(v) for v in values.values() if isinstance(v, (int, float)) and math.isfinite(v)]
    return {
        "seeds": list(values), "values": {str(s): v for s, v in values.items()},
        "dirs": {str(s): d for s, d in dirs.items()}, "n": len(ok),
        "mean": statistics.fmean(ok) if ok else None,
        "std": statistics.stdev(ok) if len(ok) > 1 else 0.0 if ok else None,
        "min": min(ok) if ok else None, "max": max(ok) if ok else None,
        "failed": [s for s, v in values.items() if not (isinstance(v, (int, float)) and math.isfinite(v))],
    }


def combine(per_seed: Sequence[tuple[float | None, float, float]], higher_is_better: bool) -> float | None:
    """One p-value for "this rung differs from the best" from each seed's (p-value, best's value, this rung's
    value): the largest p-value when every seed has a test and the best is ahead on every seed; 1.0 when the order
    flips on some seed (the seeds disagree) or some seed has no test (a missing or failed run: the difference is not
    shown on every seed); None without any seed at all."""
    if not per_seed:
        return None
    p_values = [p for p, _, _ in per_seed]
    if any(p is None or not math.isfinite(p) for p in p_values):
        return 1.0
    ahead = [(b > v) if higher_is_better else (b < v) for _, b, v in per_seed]
    return max(p_values) if all(ahead) else 1.0
