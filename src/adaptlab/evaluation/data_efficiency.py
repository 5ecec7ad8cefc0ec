"""The data-efficiency curve (``train_sizes:``): one point per training size, and the rule that says from which
size fine-tuning beats prompting.

:func:`point` is what metrics.json keeps per size (``train_sizes.points``, see
:func:`adaptlab.pipeline.run_configured`); :func:`beats_prompting` is the rule the report states. Pure functions,
unit-tested on constructed values.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

RULE = ("A trained rung beats prompting from a size on when, at that size and at every larger size tried, the "
        "95% interval (over test examples) of each of its seeds' runs lies entirely beyond the best prompting "
        "rung's score.")


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def point(size: int | str, n_train: int, values: Mapping[int, float | None],
          intervals: Mapping[int, Sequence[float] | None], dirs: Mapping[int, str]) -> dict:
    """One size of a rung's curve: its value per seed (None: that seed's run failed), their mean, sample standard
    deviation, min and max, and ``low``/``high``: the outermost ends of the seeds' 95% intervals (None when a seed
    failed or has no interval, so a point is only as good as its worst seed)."""
    ok = [float(v) for v in values.values() if _finite(v)]
    bounds = [intervals.get(s) for s in values]
    whole = len(ok) == len(values) and all(b and len(b) == 2 and all(map(_finite, b)) for b in bounds)
    return {
        "size": size, "n_train": n_train, "seeds": list(values), "values": {str(s): v for s, v in values.items()},
        "intervals": {str(s): list(b) if b else None for s, b in zip(values, bounds, strict=True)},
        "dirs": {str(s): d for s, d in dirs.items()}, "n": len(ok),
        "mean": statistics.fmean(ok) if ok else None,
        "std": statistics.stdev(ok) if len(ok) > 1 else 0.0 if ok else None,
        "min": min(ok) if ok else None, "max": max(ok) if ok else None,
        "low": min(b[0] for b in bounds) if whole else None, "high": max(b[1] for b in bounds) if whole else None,
        "failed": [s for s, v in values.items() if not _finite(v)],
    }


def x_value(p: Mapping, classes: int | None) -> float:
    """Where a point sits on the curve's axis: its size, or for ``all`` the examples it trained on (per class when
    the sizes count per class: the mean class size)."""
    if p["size"] != "all":
        return float(p["size"])
    return p["n_train"] / classes if classes else float(p["n_train"])


def _beyond(p: Mapping, reference: float, higher_is_better: bool) -> bool:
    bound = p.get("low") if higher_is_better else p.get("high")
    return _finite(bound) and (bound > reference if higher_is_better else bound < reference)


def beats_prompting(curves: Mapping[str, Mapping], references: Mapping[str, float | None],
                    higher_is_better: bool) -> dict | None:
    """The smallest size from which a trained rung beats the best prompting rung (see :data:`RULE`).

    ``curves``: per trained rung, its ``train_sizes`` record (``points`` in ascending size, ``classes``);
    ``references``: each prompting rung's score. Returns ``{"size", "x", "rung", "reference", "reference_value"}``
    for the smallest such size over all rungs (the earliest on the axis), or None when no rung beats it at any
    size tried, or when there is no prompting score to beat."""
    scored = {k: float(v) for k, v in references.items() if _finite(v)}
    if not scored:
        return None
    ref = (max if higher_is_better else min)(scored, key=lambda k: scored[k])
    found = None
    for rung, curve in curves.items():
        points = list(curve.get("points") or [])
        for i, p in enumerate(points):
            if all(_beyond(q, scored[ref], higher_is_better) for q in points[i:]):
                x = x_value(p, curve.get("classes"))
                if found is None or x < found["x"]:
                    found = {"size": p["size"], "x": x, "rung": rung, "reference": ref,
                             "reference_value": scored[ref], "bound": p["low" if higher_is_better else "high"]}
                break
    return found
