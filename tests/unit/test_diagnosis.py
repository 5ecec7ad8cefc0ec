"""The degenerate-rung diagnosis and what the recommendation does with it (pure functions)."""

from __future__ import annotations

import math

import pytest

from adaptlab.evaluation.diagnosis import diagnose_classification, prior_loss, summary
from adaptlab.reporting.recommend import recommend

REFS = ["a"] * 60 + ["b"] * 30 + ["c"] * 10


def test_all_one_class_is_degenerate():
    d = diagnose_classification(["a"] * 100, REFS, train_counts=[60, 30, 10], losses=[], class_weighted=True)
    assert d["degenerate"] and d["doubted"]
    assert "predicts 'a' for 100% of the test examples (it is 60% of them)" in d["findings"][0]
    assert "label_descriptions" in d["advice"]  # no training history: the advice is about prompts, not epochs


def test_nearly_one_class_is_degenerate_but_a_mix_is_not():
    nearly = ["a"] * 96 + ["b"] * 4
    assert diagnose_classification(nearly, REFS, train_counts=[60, 30, 10], losses=[], class_weighted=False)[
        "degenerate"]
    mixed = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    d = diagnose_classification(mixed, REFS, train_counts=[60, 30, 10], losses=[0.2], class_weighted=False)
    assert d == {"degenerate": False, "doubted": False, "findings": [], "advice": ""}


def test_one_class_test_set_predicted_as_that_class_is_fine():
    d = diagnose_classification(["a"] * 10, ["a"] * 10, train_counts=[5, 5], losses=[], class_weighted=False)
    assert not d["degenerate"]


def test_flat_loss_at_the_prior_entropy_is_degenerate():
    prior = prior_loss([60, 30, 10], class_weighted=False)
    assert prior == pytest.approx(-(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1)))
    preds = ["a"] * 50 + ["b"] * 40 + ["c"] * 10
    flat = diagnose_classification(preds, REFS, train_counts=[60, 30, 10], losses=[1.1, prior + 0.01, prior],
                                   class_weighted=False)
    assert flat["degenerate"] and "never went below" in flat["findings"][0]
    assert "train longer" in flat["advice"]
    learned = diagnose_classification(preds, REFS, train_counts=[60, 30, 10], losses=[1.1, 0.9 * prior],
                                      class_weighted=False)
    assert not learned["degenerate"]


def test_balanced_loss_floor_is_log_k():
    assert prior_loss([60, 30, 10], class_weighted=True) == pytest.approx(math.log(3))
    preds = ["a"] * 50 + ["b"] * 40 + ["c"] * 10
    # 1.09 is above the unweighted prior entropy (0.898) but still at log 3 = 1.0986, the balanced floor: flagged
    d = diagnose_classification(preds, REFS, train_counts=[60, 30, 10], losses=[1.09], class_weighted=True)
    assert d["degenerate"]


def test_a_class_never_predicted_is_doubted_not_degenerate():
    preds = ["a"] * 65 + ["b"] * 35
    d = diagnose_classification(preds, REFS, train_counts=[60, 30, 10], losses=[0.3], class_weighted=True)
    assert not d["degenerate"] and d["doubted"]
    assert d["findings"] == ["never predicts 'c' (10 test examples)"]
    assert summary(d).startswith("never predicts 'c'")


def _entry(rung, value, interval, seconds, diagnosis=None):
    return {"rung": rung, "status": "ok", "value": value, "interval": interval,
            "cost": {"train_seconds": seconds, "trainable_params": 1, "latency_ms_p50": 1, "size_on_disk_bytes": 1},
            "diagnosis": diagnosis}


def test_recommendation_excludes_degenerate_rungs_and_says_why():
    bad = {"degenerate": True, "doubted": True, "findings": ["predicts 'a' for 100% of the test examples"],
           "advice": "Train longer."}
    entries = [
        _entry("probe", 0.60, [0.55, 0.65], 1.0),
        # cheapest and overlapping the probe's interval: without the flag it would be recommended
        _entry("lora", 0.58, [0.50, 0.66], 0.5, bad),
    ]
    rec = recommend(entries, {})
    assert rec.choice == "probe"
    assert "lora" in rec.excluded and "lora" in rec.flagged
    assert "Excluded as degenerate: lora (predicts 'a' for 100% of the test examples. Train longer)" in rec.reason
    without_flag = recommend([entries[0], {**entries[1], "diagnosis": None}], {})
    assert without_flag.choice == "lora"


def test_recommendation_names_doubted_rungs_but_keeps_them():
    doubt = {"degenerate": False, "doubted": True, "findings": ["never predicts 'c' (10 test examples)"],
             "advice": "Train longer."}
    rec = recommend([_entry("full", 0.7, [0.65, 0.75], 2.0, doubt), _entry("probe", 0.5, [0.45, 0.55], 1.0)], {})
    assert rec.choice == "full" and "full" not in rec.excluded
    assert "Doubted: full (never predicts 'c'" in rec.reason


def test_no_recommendation_when_every_rung_is_degenerate():
    bad = {"degenerate": True, "doubted": True, "findings": ["x"], "advice": ""}
    rec = recommend([_entry("a", 0.3, [0.2, 0.4], 1.0, bad)], {})
    assert rec.choice is None and "learned nothing" in rec.reason
