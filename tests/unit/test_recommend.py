"""The recommendation rule on constructed leaderboards: which rung to ship, and who comes second."""

from __future__ import annotations

import math

import pytest

from adaptlab.reporting.recommend import (
    best_entry,
    cost_key,
    cost_phrase,
    fmt_p,
    intervals_overlap,
    pareto_front,
    recommend,
)


def entry(rung, value, interval=None, seconds=1.0, params=0, latency=1.0, size=100, status="ok"):
    cost = {"train_seconds": seconds, "trainable_params": params, "latency_ms_p50": latency,
            "size_on_disk_bytes": size}
    if interval is None and value is not None:
        interval = [value - 0.02, value + 0.02]
    return {"rung": rung, "status": status, "value": value, "interval": interval, "cost": cost}


LADDER = [
    entry("full", 0.83, [0.81, 0.85], seconds=235, params=22_700_000, latency=9),
    entry("lora", 0.80, [0.78, 0.82], seconds=162, params=74_000, latency=11),
    entry("linear_probe", 0.76, [0.74, 0.78], seconds=45, params=770, latency=8),
    entry("zero_shot", 0.60, [0.58, 0.62], seconds=0.5, params=0, latency=8),
]


def test_cheap_rung_indistinguishable_by_paired_test_is_chosen():
    rec = recommend(LADDER, {"lora": 0.21, "linear_probe": 0.003, "zero_shot": 1e-9}, metric="macro_f1")
    assert recommend(LADDER[::3], {"zero_shot": 1e-9}).runner_up_reason.count("(p < 0.001 < 0.05 vs the best") == 1
    assert rec.best == "full"
    assert rec.choice == "lora"
    assert rec.indistinguishable == ["lora", "full"]  # in cost order
    assert rec.runner_up == "full"
    assert rec.runner_up_reason.startswith("full has the best macro_f1 (0.83) but costs more (training time 235 s")
    assert "p = 0.21 >= 0.05" in rec.reason and "training time 162 s vs 235 s for full" in rec.reason
    assert "macro_f1" in rec.rule and "p >= 0.05" in rec.rule and "training time" in rec.rule


def test_better_but_much_costlier_rung_wins_when_the_cheap_ones_are_significantly_worse():
    rec = recommend(LADDER, {"lora": 0.01, "linear_probe": 0.001, "zero_shot": 1e-9})
    assert rec.choice == "full"
    assert rec.indistinguishable == ["full"]
    assert rec.runner_up == "lora"  # the next best by quality, named with what it gives up
    assert "statistically worse" in rec.runner_up_reason and "p = 0.01 < 0.05" in rec.runner_up_reason
    assert "no other rung is statistically indistinguishable" in rec.reason


def test_cheap_rung_inside_the_interval_of_the_best_when_no_paired_test():
    entries = [
        entry("full", 0.83, [0.79, 0.87], seconds=235),
        entry("linear_probe", 0.80, [0.76, 0.84], seconds=45),  # overlaps the best's interval
        entry("zero_shot", 0.60, [0.55, 0.65], seconds=0.5),  # does not
    ]
    rec = recommend(entries, {})
    assert rec.choice == "linear_probe"
    assert "intervals overlap" in rec.reason
    assert rec.runner_up == "full"


def test_paired_test_takes_precedence_over_overlapping_intervals():
    entries = [entry("full", 0.83, [0.79, 0.87], seconds=235), entry("probe", 0.80, [0.76, 0.84], seconds=45)]
    assert recommend(entries, {"probe": 0.04}).choice == "full"
    assert recommend(entries, {"probe": 0.05}).choice == "probe"  # p >= alpha counts as indistinguishable
    assert recommend(entries, {"probe": None}).choice == "probe"  # no test: fall back to the intervals


def test_ties_go_to_the_cheaper_rung():
    entries = [
        entry("b_expensive", 0.80, None, seconds=100),
        entry("a_cheap", 0.80, None, seconds=10),
    ]
    for e in entries:
        e["interval"] = None  # neither a test nor an interval: only equal values count as indistinguishable
    rec = recommend(entries, {})
    assert rec.best == "a_cheap" and rec.choice == "a_cheap" and rec.runner_up == "b_expensive"
    # with every cost equal, the rung name decides, so the result does not depend on input order
    same = [entry("zeta", 0.8, seconds=5), entry("alpha", 0.8, seconds=5)]
    assert recommend(same, {"zeta": 1.0}).choice == "alpha"
    assert recommend(list(reversed(same)), {"zeta": 1.0}).choice == "alpha"


def test_lexicographic_cost_order():
    # equal training time -> fewer trainable params; equal params too -> lower latency
    a = entry("a", 0.8, seconds=10, params=1000, latency=5)
    b = entry("b", 0.8, seconds=10, params=10, latency=50)
    c = entry("c", 0.8, seconds=10, params=10, latency=4)
    assert sorted([a, b, c], key=cost_key) == [c, b, a]
    assert recommend([a, b, c], {"b": 0.9, "c": 0.9}).choice == "c"


def test_one_rung():
    rec = recommend([entry("lora", 0.8)], {})
    assert rec.choice == rec.best == "lora"
    assert rec.runner_up is None and rec.runner_up_reason == ""
    assert "only rung that finished" in rec.reason


def test_all_failed_and_empty():
    failed = [entry("lora", None, status="failed"), entry("full", None, status="failed")]
    rec = recommend(failed, {})
    assert rec.choice is None and rec.best is None and rec.runner_up is None
    assert rec.excluded == ["lora", "full"]
    assert "every rung failed" in rec.reason
    assert recommend([], {}).choice is None


def test_failed_and_non_finite_rungs_are_excluded_even_if_cheapest():
    entries = [
        entry("full", 0.83, seconds=235),
        entry("crashed", None, seconds=0.1, status="failed"),
        entry("nan", math.nan, seconds=0.1),
        entry("lora", 0.82, seconds=100),
    ]
    rec = recommend(entries, {"lora": 0.5})
    assert rec.choice == "lora"
    assert rec.excluded == ["crashed", "nan"]
    assert "crashed" not in rec.indistinguishable


def test_unknown_cost_is_never_the_cheapest():
    known = entry("known", 0.8, seconds=500)
    unknown = {"rung": "unknown", "status": "ok", "value": 0.8, "interval": [0.78, 0.82], "cost": {}}
    assert recommend([unknown, known], {"unknown": 1.0, "known": 1.0}).choice == "known"


def test_lower_is_better_metric():
    entries = [entry("a", 12.0, [11, 13], seconds=100), entry("b", 12.5, [11.5, 13.5], seconds=1),
               entry("c", 30.0, [29, 31], seconds=0.1)]
    rec = recommend(entries, {"b": 0.4, "c": 0.0001}, higher_is_better=False, metric="perplexity")
    assert rec.best == "a" and rec.choice == "b"
    assert best_entry(entries, higher_is_better=False)["rung"] == "a"
    assert best_entry(entries, higher_is_better=True)["rung"] == "c"


def test_intervals_overlap():
    assert intervals_overlap([0.1, 0.3], [0.3, 0.5]) is True
    assert intervals_overlap([0.1, 0.29], [0.3, 0.5]) is False
    assert intervals_overlap(None, [0.3, 0.5]) is None
    assert intervals_overlap([None, 0.2], [0.1, 0.5]) is None


def test_pareto_front():
    points = [("zero", 0.0, 0.60), ("probe", 45.0, 0.76), ("slow_bad", 300.0, 0.70), ("lora", 162.0, 0.80),
              ("full", 235.0, 0.83), ("same_cost_worse", 45.0, 0.70)]
    assert pareto_front(points) == ["zero", "probe", "lora", "full"]
    # lower is better: the cheapest point with the lowest value dominates everything else
    assert pareto_front([("a", 1.0, 10.0), ("b", 2.0, 12.0), ("c", 3.0, 5.0)], higher_is_better=False) == ["a", "c"]
    # exact duplicates do not dominate each other
    assert pareto_front([("x", 1.0, 0.5), ("y", 1.0, 0.5)]) == ["x", "y"]


@pytest.mark.parametrize("p,text", [(0.21, "0.21"), (0.0004, "< 0.001"), (0.05, "0.05"), (1.0, "1")])
def test_fmt_p(p, text):
    assert fmt_p(p) == text


def test_cost_phrase_names_the_first_cost_that_differs():
    a = entry("a", 0.8, seconds=10, params=5)
    b = entry("b", 0.8, seconds=10, params=5_000_000)
    assert cost_phrase(a, b) == "trainable parameters 5 vs 5,000,000 for b"
    assert cost_phrase(a, a) == "same recorded cost as a"
