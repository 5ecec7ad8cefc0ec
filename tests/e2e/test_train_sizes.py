"""The data-efficiency curve end to end on a tiny BERT (``train_sizes:``): each rung that trains is re-run on nested,
stratified, seeded subsets of the training split into ``train_sizes/n-<size>/seed-<seed>/<rung>``, the curve is in
the leaderboard and the report, --resume keeps finished sizes, and a size the data can't give is a user error."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from tests.conftest import write_config, write_sentiment_csv

from adaptlab.config import load_ladder
from adaptlab.errors import DataError
from adaptlab.evaluation.data_efficiency import beats_prompting
from adaptlab.methods.linear_probe import LinearProbe
from adaptlab.pipeline import compare, prepare
from adaptlab.reporting.report import write_report

HEAD = {"epochs": 1, "batch_size": 16, "evals_per_epoch": 1, "min_steps": 2, "logging_steps": 5}
RUNGS = [{"method": "embedding_zero_shot"}, {"method": "linear_probe", "params": {"max_iter": 200}},
         {"method": "head_only", "params": HEAD}]
CURVE = {"sizes": [4, 8, "all"], "repeats": 2, "rungs": ["embedding_zero_shot", "linear_probe"]}


def _labels(csv_path: Path) -> dict[str, str]:
    """Row number (the split's example id) -> label."""
    with open(csv_path, encoding="utf-8") as f:
        return {str(i): row["label"] for i, row in enumerate(csv.DictReader(f), 1)}


def _ids(out: Path, size: int, seed: int) -> list[str]:
    return json.loads((out / "train_sizes" / f"n-{size}" / f"seed-{seed}" / "train_ids.json").read_text())["ids"]


@pytest.fixture
def fits(monkeypatch):
    """The training example ids every linear_probe fit saw, keyed by the folder it was staged in."""
    seen: dict[str, list[str]] = {}
    real = LinearProbe.fit

    def fit(self, data, workdir, resume=False):
        seen[str(Path(workdir).parent.parent)] = list(data.train.ids)
        return real(self, data, workdir, resume)

    monkeypatch.setattr(LinearProbe, "fit", fit)
    return seen


def test_curve_nested_stratified_reported_and_resumed(tmp_path, tiny_bert, fits):
    data = write_sentiment_csv(tmp_path / "s.csv", 160)
    ladder = prepare(load_ladder(write_config(tmp_path, data, tiny_bert, RUNGS, train_sizes=CURVE)))
    out, labels = ladder.output, _labels(data)
    board = compare(ladder)
    entries = {e["rung"]: e for e in board["rungs"]}
    assert "train_sizes" not in entries["head_only"]  # not on the curve (train_sizes.rungs)
    assert not (out / "train_sizes" / "n-4" / "seed-0" / "head_only").exists()

    # the subsets: the ids each fit trained on, nested per seed, the same count of each class, seeds differ
    for size in (4, 8):
        for seed in (0, 1):
            folder = out / "train_sizes" / f"n-{size}" / f"seed-{seed}"
            assert json.loads((folder / "linear_probe" / "metrics.json").read_text())["status"] == "ok"
            assert fits[str(folder)] == _ids(out, size, seed)
            assert Counter(labels[i] for i in _ids(out, size, seed)) == {"pos": size, "neg": size}
    for seed in (0, 1):
        assert set(_ids(out, 4, seed)) < set(_ids(out, 8, seed))
    assert set(_ids(out, 8, 0)) != set(_ids(out, 8, 1))
    assert set(_ids(out, 8, 0)) < set(ladder.data.train.ids)
    assert fits[str(out)] == ladder.data.train.ids  # the ladder's own run: the whole training split
    assert not (out / "train_sizes" / "n-all").exists()  # `all` is the ladder's own run, not run again

    # the record: per size, each seed's run, with `all` the ladder's own run; the prompting rung is flat
    curve = entries["linear_probe"]["train_sizes"]
    assert curve["unit"] == "per_class" and curve["classes"] == 2 and curve["trains"] is True
    assert [p["size"] for p in curve["points"]] == [4, 8, "all"] and [p["n"] for p in curve["points"]] == [2, 2, 1]
    four = curve["points"][0]
    runs = [json.loads((out / four["dirs"][s] / "metrics.json").read_text()) for s in ("0", "1")]
    assert [four["values"][s] for s in ("0", "1")] == [r["value"] for r in runs]
    assert four["mean"] == pytest.approx(sum(r["value"] for r in runs) / 2) and four["n_train"] == 8
    assert four["low"] == min(r["interval"][0] for r in runs)
    whole = curve["points"][2]
    assert whole["values"]["0"] == entries["linear_probe"]["value"] and whole["dirs"] == {"0": "linear_probe"}
    assert whole["n_train"] == len(ladder.data.train)
    zero = entries["embedding_zero_shot"]["train_sizes"]
    assert zero["trains"] is False and zero["points"] == []
    assert zero["reference"]["value"] == entries["embedding_zero_shot"]["value"]
    assert not (out / "train_sizes" / "n-4" / "seed-0" / "embedding_zero_shot").exists()
    assert json.loads((out / "linear_probe" / "metrics.json").read_text())["train_sizes"] == curve

    # the report: the section in report.md with the verdict computed from the data, the chart in report.html
    md, page = (p.read_text() for p in write_report([out], out, quiet=True))
    section = md.split("## How many labels do I need?")[1].split("\n## ")[0]
    found = beats_prompting({"linear_probe": curve}, {"embedding_zero_shot": zero["reference"]["value"]}, True)
    expected = (f"from {found['size']} examples per class" if found and found["size"] != "all"
                else "only with the whole training split" if found else "does not beat prompting")
    assert expected in section and "| linear_probe | trains |" in section
    assert 'id="train-sizes-chart"' in page and "<svg" in page.split('id="train-sizes-chart"')[1][:400]

    # --resume: nothing finished is trained again; a removed size/seed is
    shutil.rmtree(out / "train_sizes" / "n-8" / "seed-1" / "linear_probe")
    fits.clear()
    again = compare(prepare(ladder.spec), resume=True)
    assert list(fits) == [str(out / "train_sizes" / "n-8" / "seed-1")]
    assert (out / "train_sizes" / "n-8" / "seed-1" / "linear_probe" / "metrics.json").is_file()
    resumed = {e["rung"]: e for e in again["rungs"]}["linear_probe"]["train_sizes"]
    assert [p["values"] for p in resumed["points"]][:1] == [curve["points"][0]["values"]]


def test_size_larger_than_the_smallest_class_is_a_user_error(tmp_path, tiny_bert, monkeypatch, capsys):
    data = write_sentiment_csv(tmp_path / "s.csv", 160)  # 104 training examples: 52 per class
    config = write_config(tmp_path, data, tiny_bert, RUNGS[:2], train_sizes=[4, 60, 100])
    with pytest.raises(DataError) as err:
        prepare(load_ladder(config))
    message = str(err.value)
    assert "train_sizes: 60, 100 examples per class are more than class 'neg' has in the training split (52 of 104 " \
           "examples); use sizes up to 52, or `all`" in message
    from tests.e2e.test_cli import run_cli

    code, out, err_text = run_cli(monkeypatch, capsys, "compare", config)
    assert code == 2 and "60, 100 examples per class" in err_text + out and "Traceback" not in err_text + out


def test_a_task_without_a_label_to_stratify_by_counts_examples(tmp_path, tiny_bert):
    from tests.ner_data import write_ner_jsonl

    from adaptlab.pipeline import size_ladder, train_strata

    data = write_ner_jsonl(tmp_path / "ner.jsonl", 100)  # 65 training sentences
    rungs = [{"method": "linear_probe"}]
    config = write_config(tmp_path, data, tiny_bert, rungs, task={"type": "token_classification"},
                          train_sizes=[10, 20])
    ladder = prepare(load_ladder(config))
    assert ladder.task.stratify_role is None and train_strata(ladder.task, ladder.data) is None
    small, large = size_ladder(ladder, 10, 0), size_ladder(ladder, 20, 0)
    assert len(small.data.train) == 10 and len(large.data.train) == 20
    assert set(small.data.train.ids) < set(large.data.train.ids) < set(ladder.data.train.ids)
    assert small.data.test is ladder.data.test and small.data.validation is ladder.data.validation
    assert small.data_hash != ladder.data_hash and small.ctx.seed == 0
    assert small.output == ladder.output / "train_sizes" / "n-10" / "seed-0"
    too_big = write_config(tmp_path, data, tiny_bert, rungs, task={"type": "token_classification"},
                           train_sizes=[10, 500])
    with pytest.raises(DataError, match=r"train_sizes: 500 examples is more than the training split has \(65 "):
        prepare(load_ladder(too_big))
