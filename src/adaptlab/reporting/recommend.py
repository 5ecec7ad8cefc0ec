"""Which rung to ship: the cheapest one whose quality cannot be told apart from the best.

The rule (stated in every report, see :data:`RULE`):

1. Failed rungs (status other than ``ok``, or no finite value) are excluded, and so are *degenerate* rungs, which
   learned nothing (nearly all predictions one class, or a training loss never below the label prior's; see
   :mod:`adaptlab.evaluation.diagnosis`). Rungs with a lesser finding (e.g. a class never predicted) stay in, and
   the reason names them as doubted.
2. The *best* rung has the best primary metric (ties: the cheaper one, see 4).
3. A rung is *indistinguishable from the best* when its paired significance test against the best gives
   ``p >= 0.05``; when no paired test is available for it (no predictions to pair), when its 95% interval overlaps
   the best rung's interval; with neither, only an identical value counts. The best rung is always in the set.
4. *Cheapest* is a lexicographic order on the cost record: training seconds, then trainable parameters, then p50
   latency, then size on disk, then the rung name (so the choice is deterministic). A missing cost counts as
   infinitely expensive: a rung is never recommended because its cost is unknown.
5. The recommendation is the cheapest indistinguishable rung. The runner-up is the next cheapest
   indistinguishable rung; when the set has only one rung, it is the next best rung by quality (significantly
   worse, named so a user knows what they would give up).

Everything here is a pure function of leaderboard entries (dicts with ``rung``, ``status``, ``value``,
``interval`` and ``cost``) and p-values, so it is unit-tested on constructed leaderboards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ALPHA = 0.05
COST_ORDER = ("train_seconds", "trainable_params", "latency_ms_p50", "size_on_disk_bytes")
COST_LABELS = {
    "train_seconds": "training time",
    "trainable_params": "trainable parameters",
    "latency_ms_p50": "p50 latency",
    "size_on_disk_bytes": "size on disk",
}
RULE = (
    "Recommended: the cheapest rung whose {metric} is statistically indistinguishable from the best rung's "
    "(paired test against the best: p >= {alpha}; where no paired test is available, the 95% intervals overlap). "
    "Cheapest = shortest training time, then fewest trainable parameters, then lowest p50 latency, then smallest "
    "size on disk; an unknown cost counts as the most expensive. Failed rungs are excluded, and so are degenerate "
    "rungs (nearly all test predictions one class, or a training loss never below that of predicting the label "
    "prior): they learned nothing, so their score says nothing about the method."
)


@dataclass(frozen=True)
class Recommendation:
    """The choice and why. Rung names as in the entries; ``None`` where there is nothing to name."""

    choice: str | None
    runner_up: str | None
    best: str | None
    indistinguishable: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    rule: str = ""
    reason: str = ""
    runner_up_reason: str = ""
    #: rung -> why it was excluded as degenerate or is doubted (in words); also said in ``reason``.
    flagged: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "choice": self.choice, "runner_up": self.runner_up, "best": self.best,
            "indistinguishable": list(self.indistinguishable), "excluded": list(self.excluded), "rule": self.rule,
            "reason": self.reason, "runner_up_reason": self.runner_up_reason, "flagged": dict(self.flagged),
        }


def is_usable(entry: Mapping) -> bool:
    """A rung that finished with a finite value of the primary metric."""
    value = entry.get("value")
    return entry.get("status") == "ok" and isinstance(value, (int, float)) and math.isfinite(value)


def is_degenerate(entry: Mapping) -> bool:
    """A rung that finished but learned nothing (see :mod:`adaptlab.evaluation.diagnosis`)."""
    return bool((entry.get("diagnosis") or {}).get("degenerate"))


def is_candidate(entry: Mapping) -> bool:
    """A rung the recommendation may choose: finished with a finite value and not degenerate."""
    return is_usable(entry) and not is_degenerate(entry)


def _flag_text(entries: Sequence[Mapping]) -> tuple[dict[str, str], str]:
    """Per flagged rung its diagnosis, and the sentences the recommendation adds about them."""
    from adaptlab.evaluation.diagnosis import summary

    flagged = {str(e["rung"]): summary(e.get("diagnosis")) for e in entries
               if is_usable(e) and (e.get("diagnosis") or {}).get("findings")}
    out = []
    for rung, why in flagged.items():
        entry = next(e for e in entries if e["rung"] == rung)
        verb = "Excluded as degenerate" if is_degenerate(entry) else "Doubted"
        out.append(f"{verb}: {rung} ({why.rstrip('.')}).")
    return flagged, " ".join(out)


def cost_key(entry: Mapping) -> tuple:
    """The sort key for "cheapest": :data:`COST_ORDER` (missing = infinite), then the rung name."""
    cost = entry.get("cost") or {}
    values = []
    for name in COST_ORDER:
        v = cost.get(name)
        values.append(float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.inf)
    return (*values, str(entry.get("rung")))


def quality_key(entry: Mapping, higher_is_better: bool = True) -> tuple:
    """Sort key putting the best quality first; equal values go to the cheaper rung."""
    value = float(entry["value"])
    return (-value if higher_is_better else value, *cost_key(entry))


def intervals_overlap(a: Sequence[float] | None, b: Sequence[float] | None) -> bool | None:
    """Whether two [low, high] intervals overlap; ``None`` when either is missing."""
    if not a or not b or len(a) != 2 or len(b) != 2 or any(x is None for x in (*a, *b)):
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def indistinguishable(
    entry: Mapping, best: Mapping, p_value: float | None, alpha: float = ALPHA
) -> tuple[bool, str]:
    """Whether ``entry``'s quality cannot be told apart from ``best``'s, and the evidence in words."""
    if entry.get("rung") == best.get("rung"):
        return True, "the best rung"
    if p_value is not None and math.isfinite(p_value):
        verdict = p_value >= alpha
        return verdict, f"{p_phrase(p_value)} {'>=' if verdict else '<'} {alpha} vs the best"
    overlap = intervals_overlap(entry.get("interval"), best.get("interval"))
    if overlap is not None:
        return overlap, f"no paired test; 95% intervals {'overlap' if overlap else 'do not overlap'}"
    same = float(entry["value"]) == float(best["value"])
    return same, "no paired test or interval; " + ("same value" if same else "different value")


def recommend(
    entries: Sequence[Mapping],
    p_values: Mapping[str, float | None],
    *,
    higher_is_better: bool = True,
    alpha: float = ALPHA,
    metric: str = "primary metric",
) -> Recommendation:
    """Apply the rule in this module's docstring to leaderboard ``entries`` and each rung's p-value vs the best.

    ``p_values`` maps rung name -> p-value of the paired test against the best rung (``None`` or absent: no
    paired test). The p-values must have been computed against the same best rung this function picks (the best
    by ``value``, ties to the cheaper), which is what :func:`best_entry` returns.
    """
    rule = RULE.format(metric=metric, alpha=alpha)
    usable = [e for e in entries if is_candidate(e)]
    excluded = [str(e.get("rung")) for e in entries if not is_candidate(e)]
    flagged, flag_text = _flag_text(entries)
    if not usable:
        reason = ("every rung failed or learned nothing; there is nothing to recommend." if entries
                  else "there are no rungs.")
        return Recommendation(None, None, None, [], excluded, rule, f"{reason} {flag_text}".strip(), "", flagged)
    ranked = sorted(usable, key=lambda e: quality_key(e, higher_is_better))
    best = ranked[0]
    evidence = {e["rung"]: indistinguishable(e, best, p_values.get(e["rung"]), alpha) for e in ranked}
    tied = sorted((e for e in ranked if evidence[e["rung"]][0]), key=cost_key)
    choice = tied[0]
    if choice is best:
        reason = f"{best['rung']} has the best {metric} ({best['value']:.4g})"
        reason += (" and is also the cheapest of the rungs indistinguishable from it." if len(tied) > 1
                   else "; no other rung is statistically indistinguishable from it." if len(ranked) > 1
                   else "; it is the only rung that finished.")
    else:
        reason = (
            f"{choice['rung']} ({metric} {choice['value']:.4g}) is statistically indistinguishable from the best, "
            f"{best['rung']} ({best['value']:.4g}): {evidence[choice['rung']][1]}; and it is the cheapest such rung "
            f"({cost_phrase(choice, best)})."
        )
    runner_up, runner_reason = _runner_up(choice, tied, ranked, evidence, metric)
    return Recommendation(
        choice["rung"], runner_up, best["rung"], [e["rung"] for e in tied], excluded, rule,
        f"{reason} {flag_text}".strip(), runner_reason, flagged,
    )


def best_entry(entries: Sequence[Mapping], higher_is_better: bool = True) -> Mapping | None:
    """The best candidate entry (ties to the cheaper), the one p-values must be computed against."""
    usable = [e for e in entries if is_candidate(e)]
    return min(usable, key=lambda e: quality_key(e, higher_is_better)) if usable else None


def _runner_up(
    choice: Mapping, tied: list[Mapping], ranked: list[Mapping], evidence: dict, metric: str
) -> tuple[str | None, str]:
    if len(tied) > 1:
        nxt = tied[1]
        if nxt is ranked[0]:
            return nxt["rung"], (
                f"{nxt['rung']} has the best {metric} ({nxt['value']:.4g}) but costs more "
                f"({cost_phrase(nxt, choice)}), for a difference the test cannot tell from chance."
            )
        return nxt["rung"], (
            f"{nxt['rung']} ({metric} {nxt['value']:.4g}) is also indistinguishable from the best "
            f"({evidence[nxt['rung']][1]}) and the next cheapest ({cost_phrase(nxt, choice)})."
        )
    others = [e for e in ranked if e is not choice]
    if not others:
        return None, ""
    nxt = others[0]
    return nxt["rung"], (
        f"{nxt['rung']} ({metric} {nxt['value']:.4g}) is the next best, but statistically worse than "
        f"{choice['rung']} ({evidence[nxt['rung']][1]}; {cost_phrase(nxt, choice)})."
    )


def cost_phrase(entry: Mapping, other: Mapping) -> str:
    """'2.1 s training vs 162 s for lora' style comparison on the first cost that differs."""
    a, b = entry.get("cost") or {}, other.get("cost") or {}
    for name in COST_ORDER:
        va, vb = a.get(name), b.get(name)
        if va is None or vb is None or va == vb:
            continue
        return f"{COST_LABELS[name]} {_cost_value(name, va)} vs {_cost_value(name, vb)} for {other['rung']}"
    return f"same recorded cost as {other['rung']}"


def _cost_value(name: str, v: float) -> str:
    if name == "train_seconds":
        return f"{v:.3g} s"
    if name == "latency_ms_p50":
        return f"{v:.3g} ms"
    if name == "size_on_disk_bytes":
        return f"{v / 2**20:.3g} MB"
    return f"{int(v):,}"


def fmt_p(p: float) -> str:
    """A p-value for people: 3 significant digits, '< 0.001' below that."""
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def p_phrase(p: float) -> str:
    """'p = 0.21' or 'p < 0.001'."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def pareto_front(points: Sequence[tuple[str, float, float]], higher_is_better: bool = True) -> list[str]:
    """Names of the points ``(name, cost, quality)`` that no other point dominates.

    A point is dominated when another costs no more and is no worse, and is strictly better on one of the two.
    Returned in increasing cost.
    """
    sign = 1.0 if higher_is_better else -1.0
    front = []
    for name, cost, quality in points:
        q = sign * quality
        dominated = any(
            c2 <= cost and sign * q2 >= q and (c2 < cost or sign * q2 > q)
            for n2, c2, q2 in points if n2 != name
        )
        if not dominated:
            front.append((cost, -q, name))
    return [name for _, _, name in sorted(front)]
