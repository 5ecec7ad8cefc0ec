"""A fair ladder end to end on a tiny BERT: every tuned rung gets the same budget, the search reads train and
validation only, the test split is read by the chosen settings (and the defaults, for the report), a resumed search
makes the same choices, and training seeds change training but not the split."""

from __future__ import annotations

import json

import pytest
from tests.conftest import write_config, write_sentiment_csv

from adaptlab.config import load_ladder
from adaptlab.pipeline import compare, prepare, run_trial, training_seeds
from adaptlab.runs import registry
from adaptlab.tuning import SealedSplit

HEAD = {"epochs": 2, "batch_size": 16, "evals_per_epoch": 1, "logging_steps": 5}
RUNGS = [{"method": "embedding_zero_shot"}, {"method": "head_only", "params": HEAD},
         {"method": "linear_probe", "params": {"max_iter": 200}}]


def _ladder(tmp_path, tiny_bert, rungs=RUNGS, **extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_sentiment_csv(tmp_path / "s.csv", 160)
    cfg = write_config(tmp_path, data, tiny_bert, rungs, **extra)
    return prepare(load_ladder(cfg))


def _trials(ladder, rung):
    return [json.loads(line) for line in (ladder.output / "tuning" / rung / "trials.jsonl").read_text().splitlines()]


@pytest.fixture
def split_reads(monkeypatch):
    """Which splits the task predicted, tagged by whether a search was running."""
    import adaptlab.pipeline as P

    reads: list[tuple[bool, str]] = []
    searching = [False]
    real_tune = P.tune_rung

    def tune(*a, **k):
        searching[0] = True
        try:
            return real_tune(*a, **k)
        finally:
            searching[0] = False

    monkeypatch.setattr(P, "tune_rung", tune)
    return reads, searching


def test_budget_per_rung_and_test_split_untouched_by_the_search(tmp_path, tiny_bert, split_reads, monkeypatch):
    reads, searching = split_reads
    ladder = _ladder(tmp_path, tiny_bert, tuning={"trials": 3})
    real_predict = ladder.task.predict

    def predict(method, split):
        name = "test" if split is ladder.data.test else "validation" if split is ladder.data.validation else "?"
        reads.append((searching[0], "sealed" if isinstance(split, SealedSplit) else name))
        return real_predict(method, split)

    monkeypatch.setattr(ladder.task, "predict", predict)
    board = compare(ladder)
    for rung in ("head_only", "linear_probe"):
        trials = _trials(ladder, rung)
        assert [t["number"] for t in trials] == [0, 1, 2]  # the budget, no more, no less
        assert all(t["state"] == "complete" for t in trials), trials  # none read the sealed test split
        assert trials[0]["params"] == ({"learning_rate": 0.01} if rung == "head_only" else {"C": 1.0})
    assert not (ladder.output / "tuning" / "embedding_zero_shot").exists()  # nothing to search: run once
    during = {name for searching_, name in reads if searching_}
    assert during == {"validation"}, during
    assert ("test" in {name for s, name in reads if not s})
    entry = {e["rung"]: e for e in board["rungs"]}["head_only"]
    tuning = entry["tuning"]
    assert tuning["trials"] == 3 and tuning["budget"]["trials"] == 3
    best = max((t for t in _trials(ladder, "head_only")), key=lambda t: (t["value"], -t["number"]))
    assert tuning["tuned"]["params"] == best["params"] and tuning["tuned"]["validation"] == best["value"]
    assert tuning["tuned"]["test"] == entry["value"]
    info = json.loads((ladder.output / "head_only" / "run.json").read_text())
    assert info["params"]["learning_rate"] == best["params"]["learning_rate"]  # the shipped run is the chosen one
    rows = registry.list_trials(ladder.output / "head_only")
    assert [r["number"] for r in rows] == [0, 1, 2] and rows[0]["metric"] == "macro_f1"
    from adaptlab.reporting.report import write_report

    md, page = (p.read_text() for p in write_report([ladder.output], ladder.output, quiet=True))
    assert "## Tuning: default vs tuned" in md and "Tuned ranking on test:" in md
    assert 'id="tuning-history"' in page and "head_only" in md.split("## Tuning")[1]


def test_default_settings_scored_on_test_when_the_search_moves_away(tmp_path, tiny_bert):
    # learning rate 1e-9 learns nothing: any searched learning rate beats it on validation
    rungs = [{"method": "head_only", "params": {**HEAD, "learning_rate": 1e-9}}]
    data = write_sentiment_csv(tmp_path / "s.csv", 160)
    ladder = prepare(load_ladder(write_config(tmp_path, data, tiny_bert, rungs,
                                              tuning={"trials": 2, "space": {"head_only": {
                                                  "learning_rate": {"low": 1e-2, "high": 5e-2, "log": True}}}})))
    entry = compare(ladder)["rungs"][0]
    tuning = entry["tuning"]
    assert tuning["best"]["trial"] == 1 and tuning["tuned"]["params"]["learning_rate"] >= 1e-2
    default_dir = ladder.output / tuning["default"]["dir"]
    assert json.loads((default_dir / "run.json").read_text())["params"]["learning_rate"] == 1e-9
    assert tuning["default"]["test"] == json.loads((default_dir / "metrics.json").read_text())["value"]
    assert tuning["tuned"]["test"] > tuning["default"]["test"]
    from adaptlab.pipeline import chosen_rung, seed_ladder

    rung = ladder.spec.rung("head_only")
    chosen = chosen_rung(ladder, rung)
    assert chosen.params["learning_rate"] == tuning["tuned"]["params"]["learning_rate"]
    # a ladder re-running the rung with another seed (or a child rung's parent lookup there) finds the same choice
    assert chosen_rung(seed_ladder(ladder, 7), rung).params == chosen.params


def test_resumed_search_makes_the_same_choices(tmp_path, tiny_bert, monkeypatch):
    import adaptlab.pipeline as P

    whole = _ladder(tmp_path / "a", tiny_bert, tuning={"trials": 4, "rungs": ["linear_probe"]})
    P.tune_rung(whole, whole.spec.rung("linear_probe"))
    uninterrupted = _trials(whole, "linear_probe")

    cut = _ladder(tmp_path / "b", tiny_bert, tuning={"trials": 4, "rungs": ["linear_probe"]})
    calls = [0]

    def crash_at_third(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return run_trial(*a, **k)

    monkeypatch.setattr(P, "run_trial", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        P.tune_rung(cut, cut.spec.rung("linear_probe"))
    assert len(_trials(cut, "linear_probe")) == 2
    monkeypatch.setattr(P, "run_trial", run_trial)
    search = P.tune_rung(cut, cut.spec.rung("linear_probe"), resume=True)
    resumed = _trials(cut, "linear_probe")
    assert [t["params"] for t in resumed] == [t["params"] for t in uninterrupted]
    assert [t["value"] for t in resumed] == pytest.approx([t["value"] for t in uninterrupted])
    assert search.best.number == max(uninterrupted, key=lambda t: (t["value"], -t["number"]))["number"]


def test_seeds_change_training_not_the_split(tmp_path, tiny_bert):
    ladder = _ladder(tmp_path, tiny_bert, RUNGS[:2], seeds=[3, 4])
    assert training_seeds(ladder.spec) == [3, 4] and ladder.ctx.seed == 3
    board = compare(ladder)
    entry = {e["rung"]: e for e in board["rungs"]}["head_only"]
    seeds = entry["seeds"]
    assert seeds["seeds"] == [3, 4] and seeds["n"] == 2
    first, second = ladder.output / "head_only", ladder.output / seeds["dirs"]["4"]
    runs = [json.loads((d / "run.json").read_text()) for d in (first, second)]
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (first, second)]
    assert [r["context"]["seed"] for r in runs] == [3, 4]
    assert metrics[0]["provenance"]["data_sha256"] == metrics[1]["provenance"]["data_sha256"]
    preds = [[json.loads(x) for x in (d / "predictions.jsonl").read_text().splitlines()] for d in (first, second)]
    assert [p["id"] for p in preds[0]] == [p["id"] for p in preds[1]]  # same test examples
    from safetensors.torch import load_file

    heads = [load_file(next((d / "weights").rglob("*.safetensors"))) for d in (first, second)]
    assert any(not (heads[0][k] == heads[1][k]).all() for k in heads[0])  # training differed
    assert seeds["values"]["3"] == entry["value"] and seeds["values"]["4"] == metrics[1]["value"]
    assert seeds["mean"] == pytest.approx((metrics[0]["value"] + metrics[1]["value"]) / 2)
    zero = {e["rung"]: e for e in board["rungs"]}["embedding_zero_shot"]
    assert "seeds" not in zero  # nothing trains: one run
    from adaptlab.reporting.report import write_report

    md = write_report([ladder.output], ladder.output, quiet=True)[0].read_text()
    assert "## Training seeds" in md and "(seeds: mean" in md
    # one seed now: the finished run is kept by --resume, its record of two seeds is not
    again = compare(prepare(ladder.spec.model_copy(update={"seeds": [3]})), resume=True)
    kept = {e["rung"]: e for e in again["rungs"]}["head_only"]
    assert kept["value"] == entry["value"] and "seeds" not in kept
    assert "seeds" not in json.loads((first / "metrics.json").read_text())
