"""The search's bookkeeping without training: what trial n tries depends only on the seed and the trials before it,
the budget in trials and minutes, ties, pruning, the sealed test split, the seed rule, and config errors."""

from __future__ import annotations

import pytest

from adaptlab.config import TuningSpec, parse_ladder
from adaptlab.errors import ConfigError
from adaptlab.evaluation.seeds import combine, summarize
from adaptlab.search_space import Choice, Range, parse_dim
from adaptlab.tuning import LiveTrial, Pruned, SealedSplit, Search, Trial

SPACE = {"learning_rate": Range(low=1e-4, high=1e-2, log=True), "r": Choice(values=(4, 8, 16))}


def _search(folder, trials=6, minutes=None, resume=False, seed=0):
    spec = TuningSpec(trials=trials, minutes=minutes)
    return Search.open(folder, "digest", resume=resume, space=SPACE, spec=spec, metric="macro_f1",
                       higher_is_better=True, seed=seed, defaults={"learning_rate": 5e-4, "r": 8})


def _score(params):  # a smooth made-up objective: best near lr 3e-3, r 16
    import math

    return 1 - abs(math.log10(params["learning_rate"] / 3e-3)) / 3 + params["r"] / 100


def _run(search, n):
    for _ in range(n):
        live = search.ask()
        search.record(Trial(live.number, live.params, value=_score(live.params), seconds=1.0))


def test_trial_zero_is_the_default_and_later_trials_are_seeded(tmp_path):
    a, b = _search(tmp_path / "a"), _search(tmp_path / "b")
    _run(a, 6)
    _run(b, 6)
    assert a.trials[0].params == {"learning_rate": 5e-4, "r": 8}
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    other = _search(tmp_path / "c", seed=1)
    _run(other, 6)
    assert [t.params for t in other.trials][1:] != [t.params for t in a.trials][1:]
    assert all(1e-4 <= t.params["learning_rate"] <= 1e-2 and t.params["r"] in (4, 8, 16) for t in a.trials)


def test_resume_continues_with_the_same_choices(tmp_path):
    whole = _search(tmp_path / "whole")
    _run(whole, 6)
    cut = _search(tmp_path / "cut")
    _run(cut, 4)
    again = _search(tmp_path / "cut", resume=True)
    assert len(again.trials) == 4 and not again.done
    _run(again, 2)
    assert again.done
    assert [t.params for t in again.trials] == [t.params for t in whole.trials]
    assert again.best.number == whole.best.number
    fresh = _search(tmp_path / "cut", resume=False)  # no --resume: the old record is dropped
    assert fresh.trials == []
    other_settings = Search.open(tmp_path / "whole", "another digest", resume=True, space=SPACE,
                                 spec=TuningSpec(trials=6), metric="macro_f1", higher_is_better=True, seed=0,
                                 defaults={"learning_rate": 5e-4, "r": 8})
    assert other_settings.trials == []  # a record made with other settings is never continued


def test_budget_in_minutes_and_read_only_when_done(tmp_path):
    search = _search(tmp_path / "m", trials=None, minutes=0.05)  # 3 seconds; each trial records 1 s
    while not search.done:
        _run(search, 1)
    assert len(search.trials) == 3
    assert Search.read(tmp_path / "m", "digest", space=SPACE, spec=TuningSpec(minutes=0.05), metric="macro_f1",
                       higher_is_better=True, seed=0, defaults={}).best.number == search.best.number
    assert Search.read(tmp_path / "m", "other", space=SPACE, spec=TuningSpec(minutes=0.05), metric="m",
                       higher_is_better=True, seed=0, defaults={}) is None


def test_best_ties_go_to_the_earlier_trial_and_failures_fall_back_to_defaults(tmp_path):
    search = _search(tmp_path / "t", trials=3)
    search.record(Trial(0, {"learning_rate": 5e-4, "r": 8}, value=0.7))
    search.record(Trial(1, {"learning_rate": 1e-3, "r": 4}, value=0.7))
    search.record(Trial(2, {"learning_rate": 2e-3, "r": 4}, state="pruned", intermediate=[0.1]))
    assert search.best.number == 0
    lower = Search.open(tmp_path / "low", "d", resume=False, space=SPACE, spec=TuningSpec(trials=2), metric="loss",
                        higher_is_better=False, seed=0, defaults={"learning_rate": 5e-4, "r": 8})
    lower.record(Trial(0, {"learning_rate": 5e-4, "r": 8}, value=0.7))
    lower.record(Trial(1, {"learning_rate": 1e-3, "r": 4}, value=0.5))
    assert lower.best.number == 1
    failed = _search(tmp_path / "f", trials=1)
    failed.record(Trial(0, {"learning_rate": 5e-4, "r": 8}, state="failed", error="boom"))
    assert failed.best is None and failed.chosen_params() == {"learning_rate": 5e-4, "r": 8}
    assert failed.summary()["failed"] == 1


def test_a_trial_below_the_median_is_pruned(tmp_path):
    search = _search(tmp_path / "p", trials=10)
    for n in range(4):
        live = search.ask()
        for v in (0.8, 0.85, 0.9):
            live.reporting(lambda v=v: v)()
        search.record(Trial(n, live.params, value=0.9, intermediate=live.intermediate))
    live = search.ask()
    live.reporting(lambda: 0.2)()  # the first evaluation is warm-up: never judged
    with pytest.raises(Pruned):
        live.reporting(lambda: 0.2)()
    good = search.ask()
    for v in (0.9, 0.95):
        good.reporting(lambda v=v: v)()  # above the median: goes on
    unpruned = LiveTrial(9, {}, search.ask().handle, pruning=False)
    for v in (0.0, 0.0, 0.0):
        unpruned.reporting(lambda v=v: v)()


def test_sealed_split_raises_on_any_use():
    sealed = SealedSplit()
    with pytest.raises(RuntimeError, match="test split was read during tuning"):
        sealed.labels  # noqa: B018
    with pytest.raises(RuntimeError):
        len(sealed)


def test_seed_rule_needs_every_seed_and_one_direction():
    assert combine([(0.01, 0.8, 0.7), (0.03, 0.82, 0.7)], True) == 0.03
    assert combine([(0.01, 0.8, 0.7), (0.01, 0.7, 0.8)], True) == 1.0  # order flips: the seeds disagree
    assert combine([(0.01, 0.8, 0.7), (0.20, 0.78, 0.76)], True) == 0.20  # not significant on one seed
    assert combine([(0.01, 0.5, 0.6)], False) == 0.01  # lower is better
    assert combine([], True) is None
    s = summarize({0: 0.8, 1: 0.9, 2: None}, {0: "a", 1: "b", 2: "c"})
    assert s["mean"] == pytest.approx(0.85) and s["std"] == pytest.approx(0.0707, abs=1e-3) and s["failed"] == [2]


def _seeded_run(name, value, seeds):
    from pathlib import Path

    from adaptlab.reporting.runs import Run

    metrics = {"status": "ok", "rung": name, "value": value}
    if seeds is not None:  # a rung run with one seed has no `seeds` record
        metrics["seeds"] = {"seeds": seeds, "dirs": {str(s): f"seeds/seed-{s}/{name}" for s in seeds}}
    return Run(name, "l", name, Path("/ladder") / name, metrics)


def test_cross_seed_rule_in_the_report():
    from adaptlab.reporting.fairness import seed_aware_tests

    best, other = _seeded_run("lora", 0.8, [0, 1]), _seeded_run("probe", 0.7, [0, 1])
    runs = [best, other]
    single = {"probe": {"method": "McNemar", "p_value": 0.001, "detail": "seed 0"}}

    def on(values):  # per seed: (p, best value, other value); None = that seed's run is missing
        def test_on(best_dir, run_dir):
            got = values[run_dir.name if run_dir.name.startswith("seed") else run_dir.parent.name]
            return None if got is None else {"p_value": got[0], "best_value": got[1], "value": got[2]}
        return test_on

    agree = seed_aware_tests(single, runs, "lora", True, on({"seed-0": (0.001, .8, .7), "seed-1": (.02, .8, .7)}))
    assert agree["probe"]["p_value"] == 0.02 and "2 seeds" in agree["probe"]["method"]
    flips = seed_aware_tests(single, runs, "lora", True, on({"seed-0": (0.001, .8, .7), "seed-1": (.01, .7, .8)}))
    assert flips["probe"]["p_value"] == 1.0
    missing = seed_aware_tests(single, runs, "lora", True, on({"seed-0": (0.001, .8, .7), "seed-1": None}))
    assert missing["probe"]["p_value"] == 1.0  # not shown on every seed
    fewer = seed_aware_tests(single, [best, _seeded_run("probe", 0.7, [0])], "lora", True,
                             on({"seed-0": (0.001, .8, .7)}))
    assert fewer["probe"]["p_value"] == 1.0  # the best ran seed 1, this rung didn't
    unseeded = seed_aware_tests(single, [_seeded_run("lora", 0.8, None), other], "lora", True, on({}))
    assert unseeded == single


def test_dimensions_from_yaml():
    assert parse_dim([4, 8]) == Choice(values=(4, 8))
    assert parse_dim({"low": 1, "high": 4}).integer
    assert not parse_dim({"low": 1e-4, "high": 1e-2, "log": True}).integer
    with pytest.raises(ValueError, match="below high"):
        parse_dim({"low": 2, "high": 1})
    with pytest.raises(ValueError, match="low > 0"):
        parse_dim({"low": 0.0, "high": 1.0, "log": True})


def _raw(**extra):
    return {"name": "t", "data": {"path": "x.csv"}, "model": "tiny-random-bert",
            "rungs": [{"method": "lora"}, {"method": "embedding_zero_shot"}], **extra}


@pytest.mark.parametrize(("extra", "message"), [
    ({"tuning": {}}, "give a budget"),
    ({"tuning": {"trials": 2, "rungs": ["lroa"]}}, "tuning.rungs: no rung named 'lroa'"),
    ({"tuning": {"trials": 2, "space": {"lora": {"rank": [4, 8]}}}}, "lora has no parameter 'rank'"),
    ({"tuning": {"trials": 2, "space": {"lora": {"learning_rate": {"low": 0.1, "high": 2.0}}}}},
     "tuning.space.lora.learning_rate (2.0)"),
    ({"tuning": {"trials": 2, "space": {"lora": {"r": {"low": 4}}}}}, "space.lora.r"),
    ({"seeds": [0, 0]}, "seeds repeat"),
    ({"tuning": {"trials": 2, "metric": "macro_f"}}, "tuning.metric: unknown metric 'macro_f'"),
    ({"tuning": {"trials": 2, "rungs": ["embedding_zero_shot"]}}, "has nothing to search"),
    ({"tuning": {"trials": 2, "rungs": ["lora"], "space": {"embedding_zero_shot": {"temperature": [0.1]}}}},
     "is not in tuning.rungs"),
    ({"seeds": [-1]}, "a seed must be a whole number"),
])
def test_config_errors_name_the_field(extra, message):
    with pytest.raises(ConfigError) as err:
        parse_ladder(_raw(**extra))
    assert message in str(err.value)


def test_every_declared_space_fits_its_method():
    """Each method's default space names its own params, and every range end and choice validates."""
    from adaptlab.methods import METHODS

    for name in METHODS.names():
        method = METHODS.get(name)
        for param, dim in method.search_space.items():
            assert param in method.Params.model_fields, (name, param)
            ends = dim.values if isinstance(dim, Choice) else (dim.low, dim.high)
            for value in ends:
                method.Params.model_validate({param: int(value) if getattr(dim, "integer", False) else value})
    # a rung that predicts nothing (domain_mlm) has no validation score for a search to compare
    trains = [n for n in METHODS.names() if METHODS.get(n).trains and METHODS.get(n).predicts and n != "spacy_ner"]
    assert all(METHODS.get(n).search_space for n in trains), [n for n in trains if not METHODS.get(n).search_space]
