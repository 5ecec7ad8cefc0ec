"""The data-efficiency curve's pieces on constructed values: the "fine-tuning beats prompting from N" rule, the
nested stratified subsets, the per-size summary, the seeds a size runs with, and the checks of ``train_sizes:``."""

from __future__ import annotations

from collections import Counter

import pytest

from adaptlab.config import LadderSpec, parse_ladder
from adaptlab.data.subsets import nested_subsets, size_problems
from adaptlab.errors import ConfigError
from adaptlab.evaluation.data_efficiency import beats_prompting, point, x_value
from adaptlab.pipeline import size_seeds


def _curve(lows: list[float | None], sizes=(8, 16, 32, "all"), classes: int | None = 2) -> dict:
    points = [{"size": s, "n_train": 200, "low": lo, "high": None if lo is None else lo + 0.1}
              for s, lo in zip(sizes, lows, strict=True)]
    return {"points": points, "classes": classes}


def test_smallest_size_from_which_a_trained_rung_stays_above_the_best_prompt():
    refs = {"zero_shot": 0.60, "few_shot_prompt": 0.65}
    found = beats_prompting({"head_only": _curve([0.50, 0.62, 0.70, 0.80])}, refs, True)
    assert found == {"size": 32, "x": 32.0, "rung": "head_only", "reference": "few_shot_prompt",
                     "reference_value": 0.65, "bound": 0.70}
    # above the best prompt at 8 but not at 16: "from 8" would be false, so from 32
    assert beats_prompting({"lora": _curve([0.70, 0.64, 0.70, 0.80])}, refs, True)["size"] == 32
    # the earliest over rungs wins
    both = {"head_only": _curve([0.50, 0.62, 0.70, 0.80]), "lora": _curve([0.60, 0.66, 0.70, 0.90])}
    assert (beats_prompting(both, refs, True)["rung"], beats_prompting(both, refs, True)["size"]) == ("lora", 16)
    # exactly equal is not above; a failed seed (no bound) never counts
    assert beats_prompting({"head_only": _curve([0.65, 0.65, 0.65, 0.65])}, refs, True) is None
    assert beats_prompting({"head_only": _curve([0.9, 0.9, None, 0.9])}, refs, True)["size"] == "all"


def test_not_within_the_sizes_tried_and_without_a_prompt_and_lower_is_better():
    assert beats_prompting({"head_only": _curve([0.1, 0.2, 0.3, 0.4])}, {"zero_shot": 0.6}, True) is None
    assert beats_prompting({"head_only": _curve([0.9, 0.9, 0.9, 0.9])}, {"zero_shot": None}, True) is None
    assert beats_prompting({"head_only": _curve([0.9, 0.9, 0.9, 0.9])}, {}, True) is None
    # lower is better (e.g. an error rate): the upper bound (low + 0.1 here) must be below the best (lowest) prompt
    found = beats_prompting({"head_only": _curve([0.5, 0.35, 0.2, 0.1])}, {"a": 0.4, "b": 0.5}, False)
    assert (found["size"], found["reference"], found["bound"]) == (32, "a", pytest.approx(0.3))


def test_all_sits_at_the_mean_class_size():
    assert x_value({"size": "all", "n_train": 300}, 3) == 100.0
    assert x_value({"size": "all", "n_train": 300}, None) == 300.0
    assert x_value({"size": 16, "n_train": 32}, 2) == 16.0


def test_nested_stratified_subsets():
    strata = ["a"] * 30 + ["b"] * 12 + ["c"] * 20
    subsets = nested_subsets(strata, [2, 5, 10], seed=3)
    for size, index in subsets.items():
        assert Counter(strata[i] for i in index) == {"a": size, "b": size, "c": size}
        assert index == sorted(index) and len(set(index)) == len(index)
    assert set(subsets[2]) < set(subsets[5]) < set(subsets[10])
    assert nested_subsets(strata, [5], seed=3)[5] == subsets[5]  # a size alone draws the same subset
    assert nested_subsets(strata, [5], seed=4)[5] != subsets[5]
    plain = nested_subsets(None, [3, 7], seed=0, n=50)
    assert len(plain[3]) == 3 and len(plain[7]) == 7 and set(plain[3]) < set(plain[7]) and max(plain[7]) < 50


def test_size_problems_name_the_class_its_count_and_the_fix():
    strata = ["pos"] * 40 + ["neg"] * 9
    (problem,) = size_problems(strata, [4, 8, 16, 32], 49)
    assert problem.startswith("train_sizes: 16, 32 examples per class are more than class 'neg' has in the training "
                              "split (9 of 49 examples); use sizes up to 9, or `all`")
    assert size_problems(strata, [4, 9], 49) == []
    (plain,) = size_problems(None, [10, 60], 49)
    assert plain.startswith("train_sizes: 60 examples is more than the training split has (49 examples)")


def test_point_summarises_seeds_and_a_failed_seed_has_no_bound():
    p = point(8, 16, {0: 0.7, 1: 0.8}, {0: [0.6, 0.8], 1: [0.65, 0.9]}, {0: "a", 1: "b"})
    assert (p["n"], p["mean"], p["min"], p["max"], p["low"], p["high"]) == (2, pytest.approx(0.75), 0.7, 0.8, 0.6, 0.9)
    failed = point(8, 16, {0: 0.7, 1: None}, {0: [0.6, 0.8], 1: None}, {0: "a", 1: "b"})
    assert failed["n"] == 1 and failed["failed"] == [1] and failed["low"] is None and failed["mean"] == 0.7


def _raw(**extra) -> dict:
    return {"name": "t", "data": {"path": "x.csv"}, "model": "tiny-random-bert",
            "rungs": [{"method": "linear_probe"}, {"method": "embedding_zero_shot"}], **extra}


def test_train_sizes_config():
    spec = parse_ladder(_raw(train_sizes=[8, 16, "all"]))
    assert spec.train_sizes.sizes == [8, 16, "all"] and spec.train_sizes.repeats == 3
    assert spec.train_sizes.rungs is None
    with pytest.raises(ConfigError) as err:
        parse_ladder(_raw(train_sizes=[16, 8]))
    assert "sizes must be ascending and each once (e.g. [8, 16])" in str(err.value)
    for bad, words in (([8, 8], "ascending and each once"), ([0, 8], "positive whole number or 'all'"),
                       (["half"], "got ['half']"), ([True], "got [True]"), (["all", 8], "write it once, last"),
                       ([], "at least 1")):
        with pytest.raises(ConfigError) as err:
            parse_ladder(_raw(train_sizes=bad))
        assert "train_sizes.sizes" in str(err.value) and words in str(err.value), (bad, str(err.value))
    with pytest.raises(ConfigError) as err:
        parse_ladder(_raw(train_sizes={"sizes": [8], "rungs": ["linear_prob"]}))
    assert "train_sizes.rungs: no rung named 'linear_prob'. Did you mean 'linear_probe'?" in str(err.value)


def test_seeds_per_size():
    def spec(**extra) -> LadderSpec:
        return parse_ladder(_raw(seed=5, **extra))

    assert size_seeds(spec(train_sizes=[8])) == [5, 6, 7]
    assert size_seeds(spec(train_sizes={"sizes": [8], "repeats": 1})) == [5]
    assert size_seeds(spec(seeds=[3, 10], train_sizes={"sizes": [8], "repeats": 3})) == [3, 10, 11]


def test_a_rung_starting_from_one_off_the_curve_is_a_config_error():
    raw = {"name": "t", "task": {"type": "generation"}, "data": {"path": "x.jsonl"}, "model": "tiny-random-gpt2",
           "rungs": [{"method": "lm_lora"}, {"method": "lm_full", "from": "lm_lora"}],
           "train_sizes": {"sizes": [8, "all"], "rungs": ["lm_full"]}}
    with pytest.raises(ConfigError) as err:
        parse_ladder(raw)
    assert "train_sizes.rungs: 'lm_full' starts from 'lm_lora', which is not on the curve" in str(err.value)
    assert parse_ladder({**raw, "train_sizes": {"sizes": [8], "rungs": ["lm_lora", "lm_full"]}}).train_sizes
