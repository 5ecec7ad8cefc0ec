"""The ladder report on hand-built ladder folders: contents, significance, two ladders, and bad input."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest

from adaptlab.errors import UserError
from adaptlab.evaluation.metrics import classification_metrics
from adaptlab.evaluation.stats import mcnemar
from adaptlab.reporting.report import build_report, write_report

DATA_SHA = "d" * 64
N = 100
LABELS = ("neg", "pos")


def provenance(data_sha: str = DATA_SHA, model: str = "tiny-random-bert") -> dict:
    return {
        "model": model, "model_sha256": "a" * 64, "data_sha256": data_sha, "config_sha256": "c" * 64, "seed": 0,
        "packages": {"adaptlab": "0.1.0", "torch": "2.13.0", "transformers": "5.23.0"},
        "git_revision": "0123abcd+dirty", "python": "3.11.7", "device": "cpu", "created": "2026-01-01T00:00:00+00:00",
    }


def confidence(i: int) -> float:
    """A distinct, deterministic confidence per example, so the worst errors have a known order."""
    return round(0.5 + 0.49 * ((i * 37) % 100) / 100, 4)


def classification_records(correct: list[bool], shuffle_seed: int | None = None) -> list[dict]:
    records = []
    for i, ok in enumerate(correct):
        ref = LABELS[i % 2]
        pred = ref if ok else LABELS[1 - i % 2]
        other = next(label for label in LABELS if label != pred)
        conf = confidence(i)
        records.append({"id": str(i + 1), "text": f"review number {i + 1}", "reference": ref, "prediction": pred,
                        "scores": {pred: conf, other: round(1 - conf, 4)}})
    if shuffle_seed is not None:  # reports must pair examples by id, not by line
        random.Random(shuffle_seed).shuffle(records)
    return records


def cost(seconds: float, params: int, latency: float = 5.0, memory: float = 900.0, size: int = 10_000) -> dict:
    return {"trainable_params": params, "total_params": 4_000_000, "trainable_pct": 100 * params / 4_000_000,
            "train_seconds": seconds, "train_samples_per_second": 100.0, "peak_memory_mb": memory,
            "size_on_disk_bytes": size, "latency_ms_p50": latency, "latency_ms_p95": latency * 1.5}


def write_run(
    ladder_dir: Path, rung: str, *, correct: list[bool] | None = None, records: list[dict] | None = None,
    seconds: float = 1.0, params: int = 0, latency: float = 5.0, history: list | None = None, status: str = "ok",
    data_sha: str = DATA_SHA, task: str = "classification", metric: str = "macro_f1", value: float | None = None,
    interval: list | None = None, ladder: str = "tiny", model: str = "tiny-random-bert", shuffle: int | None = None,
    **extra,
) -> dict:
    """A rung folder as the pipeline writes it; returns its leaderboard entry."""
    folder = ladder_dir / rung
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"ladder": ladder, "rung": {"method": rung}}), encoding="utf-8")
    entry = {"rung": rung, "method": rung, "dir": rung, "primary_metric": metric}
    if status != "ok":
        metrics = {**entry, "status": "failed", "value": None, "interval": None, "metrics": {}, "cost": {},
                   "error": "TrainingError: the loss became NaN", "task": task,
                   "provenance": provenance(data_sha, model)}
        (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        return {k: metrics[k] for k in ("rung", "method", "dir", "primary_metric", "status", "value", "interval",
                                         "metrics", "cost", "error")}
    extra_metrics = {}
    if records is None:
        records = classification_records(correct, shuffle)
        refs = [LABELS.index(r["reference"]) for r in sorted(records, key=lambda r: int(r["id"]))]
        preds = [LABELS.index(r["prediction"]) for r in sorted(records, key=lambda r: int(r["id"]))]
        result = classification_metrics(refs, preds, list(LABELS))
        value = result["macro_f1"]
        extra_metrics = {"confusion_matrix": result["confusion_matrix"], "labels": list(LABELS),
                         "per_class": result["per_class"]}
        scores = {k: result[k] for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")}
    else:
        scores = {metric: value}
    interval = interval or [value - 0.06, value + 0.06]
    extra_metrics["n"] = len(records)  # the task's evaluate records how many test examples it scored
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    entry.update(status="ok", value=value, interval=interval, metrics=scores, cost=cost(seconds, params, latency),
                 error=None)
    metrics = {**entry, "task": task, "higher_is_better": True, **extra_metrics, "intervals": {metric: interval},
               "history": history or [], "resumed_from": None, "provenance": provenance(data_sha, model), **extra}
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (folder / "weights").mkdir()
    return entry


def history(steps: int = 6, start: float = 0.7) -> list[dict]:
    out = []
    for s in range(1, steps + 1):
        out.append({"step": s, "epoch": s / steps, "loss": start / s, "learning_rate": 1e-3})
        if s % 2 == 0:
            out.append({"step": s, "epoch": s / steps, "eval_loss": start / s + 0.05})
    return out


FULL = [i < 90 for i in range(N)]
LORA = [i < 86 or i in (90, 91) for i in range(N)]  # vs full: 4 only-full-right, 2 only-lora-right
ZERO = [i < 60 for i in range(N)]  # vs full: 30 only-full-right, 0 only-zero-shot-right


def write_board(ladder_dir: Path, entries: list[dict], ladder: str = "tiny", data_sha: str = DATA_SHA,
                task: str = "classification", model: str = "tiny-random-bert", metric: str = "macro_f1") -> None:
    ok = sorted((e for e in entries if e["status"] == "ok"), key=lambda e: -e["value"])
    board = {"ladder": ladder, "task": task, "model": model, "primary_metric": metric, "higher_is_better": True,
             "data_sha256": data_sha, "split": {"train": 300, "validation": 40, "test": N, "seed": 0},
             "rungs": ok + [e for e in entries if e["status"] != "ok"]}
    (ladder_dir / "leaderboard.json").write_text(json.dumps(board), encoding="utf-8")


def make_ladder(root: Path, ladder: str = "tiny", data_sha: str = DATA_SHA, model: str = "tiny-random-bert",
                failed: bool = True, **extra) -> Path:
    """A three-rung classification ladder (+ a failed rung) with known McNemar counts against the best."""
    d = root / ladder
    kw = {"ladder": ladder, "data_sha": data_sha, "model": model}
    rungs = {
        "full": {"correct": FULL, "seconds": 235.0, "params": 4_000_000, "latency": 9.0, "history": history()},
        "lora": {"correct": LORA, "seconds": 162.0, "params": 74_000, "latency": 11.0,
                 "history": history(start=0.9), "shuffle": 1},
        "zero_shot": {"correct": ZERO, "seconds": 0.5, "params": 0, "latency": 8.0},
    }
    entries = [write_run(d, rung, **{**kw, **spec, **extra.get(rung, {})}) for rung, spec in rungs.items()]
    if failed:
        entries.append(write_run(d, "top_layers", status="failed", **kw))
    write_board(d, entries, ladder, data_sha, model=model)
    return d


def quiet_warn(messages: list[str]):
    return messages.append


# ------------------------------------------------------------------------------------------------------ tests


def test_report_of_one_ladder(tmp_path, capsys):
    ladder = make_ladder(tmp_path)
    paths = write_report([ladder], ladder)
    assert paths == [ladder / "report.md", ladder / "report.html"]
    out = capsys.readouterr().out
    assert "tiny: classification on tiny-random-bert" in out and "recommended: lora" in out  # table + choice
    # captured output is no terminal: the table is 160 columns wide, so nothing is cut; shares never in 1e+02 form
    assert "4.0M (100%)" in out and "74.0k (1.9%)" in out and "…" not in out
    md = paths[0].read_text()
    # lora is 4/2 discordant vs full (exact McNemar p = 0.6875): indistinguishable and cheaper -> ship it
    assert "**Ship `lora`.**" in md and "p = 0.688 >= 0.05" in md
    assert "Runner-up: `full`" in md
    assert "_Rule: Recommended: the cheapest rung whose macro_f1 is statistically indistinguishable" in md
    board = md.split("## Leaderboard")[1].split("## Quality against cost")[0]
    rows = {line.split("|")[2].strip(): line for line in board.splitlines() if re.match(r"\| \d+ \|", line)}
    assert list(rows) == ["full", "lora", "zero_shot", "top_layers"]  # ranked, failed last
    assert "McNemar (exact binomial)" in rows["lora"] and "| 0.688 |" in rows["lora"]
    assert "McNemar (chi-square with continuity correction)" in rows["zero_shot"] and "< 0.001" in rows["zero_shot"]
    assert "failed: TrainingError" in rows["top_layers"]
    assert "0123abcd+dirty" in md and "dddddddddddd" in md  # provenance: git revision, data hash
    assert "- training time (s): zero_shot, lora, full" in md  # Pareto front on training time
    assert "## Confusion matrices" in md and "## Worst errors" in md


def test_significance_pairs_examples_by_id(tmp_path):
    ladder = make_ladder(tmp_path)
    report = build_report([ladder], quiet_warn([]))
    # lora's predictions.jsonl is shuffled; pairing by id must still reproduce the test on the aligned vectors
    assert report.tests["lora"]["b"] == 4 and report.tests["lora"]["c"] == 2
    assert report.tests["lora"]["p_value"] == pytest.approx(mcnemar(FULL, LORA)["p_value"]) == pytest.approx(0.6875)
    zero = report.tests["zero_shot"]
    assert (zero["b"], zero["c"]) == (30, 0)
    assert zero["p_value"] == pytest.approx(mcnemar(FULL, ZERO)["p_value"]) and zero["p_value"] < 1e-6
    assert "full" not in report.tests  # the best is not tested against itself
    assert report.recommendation.choice == "lora" and report.recommendation.best == "full"


def test_html_is_self_contained_with_charts_and_sortable_tables(tmp_path):
    ladder = make_ladder(tmp_path)
    page = write_report([ladder], tmp_path / "out", quiet=True)[1].read_text()
    assert page.startswith("<!DOCTYPE html>")
    # nothing loaded from outside: no external src/href, no CSS imports
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert "@import" not in page and "url(http" not in page
    assert "Content-Security-Policy" in page
    charts = re.findall(r'<figure class="chart[^"]*" id="([^"]+)"', page)
    assert charts == ["quality-vs-trainable_params", "quality-vs-train_seconds", "quality-vs-peak_memory_mb",
                      "quality-vs-latency_ms_p50", "quality-vs-size_on_disk_bytes", "learning-curves"]
    assert page.count("<svg") == 6
    assert 'class="sortable"' in page and "<button type=\"button\">rung</button>" in page
    assert "sortTable" in page  # the inline script
    # the worst error is the wrong prediction with the highest confidence: full is wrong on ids 91..100
    worst = max(range(90, 100), key=confidence)
    assert f"<td>{worst + 1}</td><td class=\"text\">review number {worst + 1}</td>" in page


def test_confusion_matrix_shown_per_rung(tmp_path):
    ladder = make_ladder(tmp_path)
    md = write_report([ladder], tmp_path / "out", quiet=True)[0].read_text()
    # zero_shot gets ids 1..60 right: 30 neg and 30 pos; the 40 wrong are 20 of each, flipped
    block = md.split("### zero_shot")[1]
    assert "| neg | 30 | 20 |" in block and "| pos | 20 | 30 |" in block


def test_two_ladders_in_one_page(tmp_path, capsys):
    a = make_ladder(tmp_path, "minilm", model="minilm", failed=False)
    b = make_ladder(tmp_path, "bert", model="tiny-random-bert", failed=False,
                    lora={"latency": 3.0}, full={"latency": 2.0})
    paths = write_report([a, b], tmp_path / "both")
    md = paths[0].read_text()
    assert md.startswith("# minilm vs bert: classification")
    for name in ("minilm/lora", "minilm/full", "bert/lora", "bert/zero_shot"):
        assert f"| {name} |" in md
    out = capsys.readouterr().out
    assert "minilm/lora" in out and "bert/full" in out
    # identical quality across ladders: the cheapest indistinguishable rung wins (same train time -> params ->
    # latency: bert/lora has the lower latency)
    assert "**Ship `bert/lora`.**" in md
    page = paths[1].read_text()
    assert "minilm/lora" in page and "bert/lora" in page


def test_two_folders_of_the_same_ladder_name_are_told_apart(tmp_path):
    a = make_ladder(tmp_path / "one", failed=False)
    b = make_ladder(tmp_path / "two", failed=False)
    report = build_report([a, b], quiet_warn([]))
    names = {r.name for r in report.runs}
    assert len(names) == 6 and all(n.startswith("tiny@") for n in names)


def test_rung_folders_of_one_ladder_merge(tmp_path):
    ladder = make_ladder(tmp_path)
    report = build_report([ladder / "lora", ladder / "zero_shot", ladder / "lora"], quiet_warn([]))
    assert [r.name for r in report.runs] == ["lora", "zero_shot"]


def test_different_splits_refused_naming_the_runs(tmp_path):
    a = make_ladder(tmp_path, "a", failed=False)
    b = make_ladder(tmp_path, "b", data_sha="e" * 64, failed=False)
    with pytest.raises(UserError) as exc:
        write_report([a, b], tmp_path / "out", quiet=True)
    msg = str(exc.value)
    assert "different data splits" in msg
    assert f"{'d' * 64}: a/full, a/lora, a/zero_shot" in msg and f"{'e' * 64}: b/full, b/lora, b/zero_shot" in msg
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_stale_run_with_other_data_inside_one_ladder_is_refused(tmp_path):
    ladder = make_ladder(tmp_path, failed=False, zero_shot={"data_sha": "f" * 64})
    with pytest.raises(UserError, match=f"(?s){'f' * 64}: zero_shot"):
        build_report([ladder], quiet_warn([]))


def test_different_tasks_refused(tmp_path):
    a = make_ladder(tmp_path, "a", failed=False)
    g = tmp_path / "g"
    entries = [write_run(g, "sft", records=generation_records(["x"] * 4), task="generation", metric="rougeL",
                         value=0.5, ladder="g")]
    write_board(g, entries, "g", task="generation", metric="rougeL")
    with pytest.raises(UserError, match="(?s)different tasks.*classification: a/full.*generation: g/sft"):
        build_report([a, g], quiet_warn([]))


def test_empty_and_missing_folders_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no runs here"):
        build_report([tmp_path / "empty"], quiet_warn([]))
    with pytest.raises(UserError, match="no such folder"):
        build_report([tmp_path / "nope"], quiet_warn([]))
    with pytest.raises(UserError, match="no folders given"):
        build_report([], quiet_warn([]))


def test_missing_or_corrupted_metrics_skipped_with_a_warning(tmp_path, capsys):
    ladder = make_ladder(tmp_path)
    (ladder / "zero_shot" / "metrics.json").write_text('{"status": "ok", "value": 0.', encoding="utf-8")
    (ladder / "lora" / "metrics.json").unlink()
    old = ladder / "report.md"
    old.write_text("previous report", encoding="utf-8")
    paths = write_report([ladder], ladder, quiet=True)
    err = capsys.readouterr().err
    assert "skipped run" in err and str(ladder / "zero_shot") in err and "metrics.json is corrupted" in err
    assert str(ladder / "lora") in err and "metrics.json is missing" in err
    md = paths[0].read_text()
    assert "| zero_shot |" not in md and "| lora |" not in md and "| full |" in md
    assert "## Warnings" in md and "metrics.json is missing" in md
    assert "**Ship `full`.**" in md
    assert not list(ladder.glob(".report.*.tmp"))  # atomic writes leave no temporary files


def test_missing_predictions_fall_back_to_intervals(tmp_path, capsys):
    ladder = make_ladder(tmp_path, failed=False)
    (ladder / "lora" / "predictions.jsonl").unlink()
    report = build_report([ladder], quiet_warn(messages := []))
    assert any(str(ladder / "lora" / "predictions.jsonl") in m and "missing" in m for m in messages)
    assert report.tests["lora"]["p_value"] is None and report.tests["lora"]["detail"] == "no predictions to pair"
    assert report.tests["zero_shot"]["p_value"] < 0.001  # the others are still tested
    # lora's interval [0.82, 0.94] overlaps full's [0.84, 0.96]: still indistinguishable, and cheaper
    assert report.recommendation.choice == "lora"
    assert "no paired test; 95% intervals overlap" in report.recommendation.reason


def test_cut_predictions_are_not_paired(tmp_path):
    """A predictions.jsonl cut short (3 records left) would give a paired test on 3 examples: it is set aside."""
    ladder = make_ladder(tmp_path, failed=False)
    path = ladder / "lora" / "predictions.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:3]), encoding="utf-8")
    report = build_report([ladder], quiet_warn(messages := []))
    assert any("holds 3 records but the run scored" in m for m in messages)
    assert report.tests["lora"]["p_value"] is None and report.tests["zero_shot"]["p_value"] < 0.001


def test_text_from_the_data_is_escaped_in_the_page(tmp_path):
    ladder = make_ladder(tmp_path, failed=False)
    path = ladder / "zero_shot" / "predictions.jsonl"
    path.write_text(path.read_text().replace("review number", "<script>alert(1)</script> review"), encoding="utf-8")
    page = write_report([ladder], tmp_path / "out", quiet=True)[1].read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; review" in page
    assert page.count("<script>") == 1  # only the page's own sorting script


def test_all_runs_unreadable_is_an_error_and_nothing_is_written(tmp_path):
    ladder = make_ladder(tmp_path, failed=False)
    for rung in ("full", "lora", "zero_shot"):
        (ladder / rung / "metrics.json").write_text("not json", encoding="utf-8")
    with pytest.raises(UserError, match="none of its 3 run"):
        write_report([ladder], ladder, quiet=True)
    assert not (ladder / "report.md").exists() and not (ladder / "report.html").exists()


def test_without_a_leaderboard_the_rung_folders_are_read(tmp_path, capsys):
    ladder = make_ladder(tmp_path)
    (ladder / "leaderboard.json").write_text("{broken", encoding="utf-8")
    report = build_report([ladder], quiet_warn(messages := []))
    assert {r.name for r in report.runs} == {"full", "lora", "zero_shot", "top_layers"}
    assert any("leaderboard.json is corrupted" in m for m in messages)
    # the test split's size comes from the rungs' own metrics.json (`n`) when the leaderboard can't be read
    assert report.test_n == N
    assert report.recommendation.choice == "lora" and report.tests["lora"]["b"] == 4  # still tested by id


def test_without_a_leaderboard_or_a_recorded_n_the_test_size_is_unknown(tmp_path):
    ladder = make_ladder(tmp_path, failed=False)
    (ladder / "leaderboard.json").unlink()
    for rung in ("full", "lora", "zero_shot"):
        path = ladder / rung / "metrics.json"
        metrics = json.loads(path.read_text(encoding="utf-8"))
        del metrics["n"]
        path.write_text(json.dumps(metrics), encoding="utf-8")
    report = build_report([ladder], quiet_warn([]))
    assert report.test_n is None  # not guessed from the number of prediction records
    md = write_report([ladder], tmp_path / "out", quiet=True)[0].read_text()
    assert "test examples: unknown;" in md


def retag_task(ladder: Path, task: str) -> None:
    """Rewrite a ladder folder as if its runs were of ``task``."""
    for path in [ladder / "leaderboard.json", *ladder.glob("*/metrics.json")]:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["task"] = task
        path.write_text(json.dumps(data), encoding="utf-8")


def test_an_unknown_task_gets_the_generic_leaderboard_with_a_warning(tmp_path):
    ladder = make_ladder(tmp_path, failed=False)
    retag_task(ladder, "retired_task")  # an old run folder of a task this install no longer has
    report = build_report([ladder], quiet_warn(messages := []))
    assert any("'retired_task' is not a registered task" in m and "generic leaderboard only" in m for m in messages)
    assert report.sections == []
    assert {name: (t["p_value"], t["detail"]) for name, t in report.tests.items()} == {
        "lora": (None, "unknown task"), "zero_shot": (None, "unknown task")}
    md = write_report([ladder], tmp_path / "out", quiet=True)[0].read_text()
    assert "| lora |" in md and "## Confusion matrices" not in md and "## Worst errors" not in md
    assert "no paired test; 95% intervals overlap" in md  # the recommendation falls back to intervals
    assert "## Warnings" in md and "retired_task" in md


def test_a_task_adds_its_own_report_section_without_touching_reporting(tmp_path, monkeypatch):
    from adaptlab.reporting.sections import RunResults, Section
    from adaptlab.reporting.significance import no_test
    from adaptlab.tasks import TASKS

    seen: list[RunResults] = []

    class ToyTask:
        def paired_test(self, best: list[dict], other: list[dict], metric: str) -> dict:
            return no_test(f"toy pairs {len(best)} examples")

        def report_sections(self, runs: list[RunResults]) -> list[Section]:
            seen.extend(runs)
            return [Section("per-type", "Per type", "| type | f1 |\n|---|---|\n| PER | 0.9 |",
                            "<p>PER <b>0.9</b></p>")]

    monkeypatch.setitem(TASKS._items, "toy", ToyTask)  # registered for this test only
    ladder = make_ladder(tmp_path)
    retag_task(ladder, "toy")
    report = build_report([ladder], quiet_warn([]))
    assert [(r.name, r.recommended, len(r.records or [])) for r in seen] == [
        ("full", False, N), ("lora", True, N), ("zero_shot", False, N)]  # finished rungs, best first
    assert report.tests["lora"]["detail"] == "toy pairs 100 examples" and report.tests["lora"]["n"] == N
    md, page = (p.read_text() for p in write_report([ladder], tmp_path / "out", quiet=True))
    assert "## Per type\n\n| type | f1 |\n|---|---|\n| PER | 0.9 |\n" in md
    assert '<section id="per-type"><h2>Per type</h2><p>PER <b>0.9</b></p></section>' in page
    assert "## Confusion matrices" not in md  # classification's sections belong to classification


def test_all_rungs_failed_still_reports(tmp_path):
    d = tmp_path / "bad"
    entries = [write_run(d, r, status="failed") for r in ("lora", "full")]
    write_board(d, entries)
    md = write_report([d], d, quiet=True)[0].read_text()
    assert "No recommendation: every rung failed" in md
    assert "## Failed rungs" in md and "the loss became NaN" in md


def test_learning_curves_only_when_a_rung_logged_losses(tmp_path):
    d = tmp_path / "probe"
    entries = [write_run(d, "linear_probe", correct=FULL), write_run(d, "zero_shot", correct=ZERO)]
    write_board(d, entries)
    page = write_report([d], d, quiet=True)[1].read_text()
    assert 'id="learning-curves"' not in page and "No rung logged a loss history" in page


def test_forgetting_column_when_present(tmp_path):
    ladder = make_ladder(tmp_path, failed=False,
                         lora={"forgetting": {"metric": "perplexity", "before": 20.0, "after": 23.5, "delta": 3.5}},
                         full={"forgetting": 9.25})
    md = write_report([ladder], ladder, quiet=True)[0].read_text()
    assert "forgetting |" in md
    assert "+3.5 (20 -> 23.5) perplexity" in md and "+9.25" in md
    plain = make_ladder(tmp_path / "x", failed=False)
    assert "forgetting" not in write_report([plain], plain, quiet=True)[0].read_text()


def generation_records(outputs: list[str], refs: list[str] | None = None) -> list[dict]:
    refs = refs or [f"the answer is {i}" for i in range(len(outputs))]
    return [{"id": str(i), "prompt": f"question {i}?", "reference": ref, "prediction": out}
            for i, (out, ref) in enumerate(zip(outputs, refs, strict=True))]


def test_generative_outputs_side_by_side_and_paired_bootstrap(tmp_path):
    from adaptlab.evaluation.metrics import rouge_per_example, rouge_scores
    from adaptlab.evaluation.stats import paired_bootstrap_pvalue

    n = 30
    refs = [f"the answer is {i}" for i in range(n)]
    good = list(refs)
    bad = [f"no idea {i}" for i in range(n)]
    d = tmp_path / "gen"
    entries = []
    for rung, outs in (("sft", good), ("zero_shot", bad)):
        value = rouge_scores(outs, refs)["rougeL"]
        entries.append(write_run(d, rung, records=generation_records(outs, refs), task="generation",
                                 metric="rougeL", value=value, interval=[value - 0.01, value + 0.01]))
    write_board(d, entries, task="generation", metric="rougeL")
    report = build_report([d], quiet_warn([]))
    assert [(s.id, s.title) for s in report.sections] == [("side-by-side", "Outputs side by side")]  # the task's
    test = report.tests["zero_shot"]
    assert test["method"] == "paired bootstrap (per-example mean)"
    expected = paired_bootstrap_pvalue(rouge_per_example(good, refs)["rougeL"],
                                       rouge_per_example(bad, refs)["rougeL"], n_resamples=1000, seed=0)
    assert test["p_value"] == pytest.approx(expected) and test["p_value"] < 0.01
    page = write_report([d], d, quiet=True)[1].read_text()
    assert 'id="side-by-side"' in page and "question 3?" in page and "no idea 3" in page
    assert 'id="confusion"' not in page


def test_cli_report_exit_codes(tmp_path, monkeypatch, capsys):
    from adaptlab.cli import main

    def cli(*args):
        monkeypatch.setattr(sys, "argv", ["adaptlab", "report", *map(str, args)])
        with pytest.raises(SystemExit) as exc:
            main()
            raise SystemExit(0)
        out = capsys.readouterr()
        return exc.value.code or 0, out.out, out.err

    a = make_ladder(tmp_path, "a", failed=False)
    b = make_ladder(tmp_path, "b", failed=False)
    code, out, err = cli(a, b, "-o", tmp_path / "ab")
    assert code == 0, err
    assert "wrote" in out and (tmp_path / "ab" / "report.html").is_file()
    c = make_ladder(tmp_path, "c", data_sha="0" * 64, failed=False)
    code, out, err = cli(a, c)
    assert code == 2 and "different data splits" in err and "c/full" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli(tmp_path / "empty")
    assert code == 2 and "no runs here" in err
