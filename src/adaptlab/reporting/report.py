"""The ladder report: which rung to ship, and what it costs.

    write_report([Path("runs/rotten_tomatoes")], Path("runs/rotten_tomatoes"))   # report.md + report.html
    write_report([Path("runs/rt_minilm"), Path("runs/rt_bert")], Path("reports/rt"))  # two ladders, one page

The runs are read and checked by :mod:`adaptlab.reporting.runs`. Everything is computed before anything is
written, and both files are written atomically, so a report on disk is always whole.

What the report shows beyond the generic leaderboard comes from the runs' task (the ``task`` of metrics.json,
looked up in :data:`adaptlab.tasks.TASKS`), never from the shape of the records: the task runs the paired test of
every finished rung against the best one on the same test examples, paired by ``id`` (McNemar's test on
per-example correctness for classification, a paired bootstrap on per-example or corpus scores for generation;
see :mod:`adaptlab.reporting.significance`), and adds its own sections (confusion matrices, outputs side by
side...). A task this install doesn't know (an old run folder, a plug-in not installed) gets the generic
leaderboard only, with a warning. The recommendation rule is in :mod:`adaptlab.reporting.recommend`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from adaptlab.data.overlap import overlap_warning
from adaptlab.evaluation.seeds import RULE as SEED_RULE
from adaptlab.reporting import charts as C
from adaptlab.reporting.content import Report
from adaptlab.reporting.data_efficiency import data_efficiency_section
from adaptlab.reporting.fairness import seed_aware_tests, seeds_section, tuning_section
from adaptlab.reporting.html import render_html
from adaptlab.reporting.markdown import render_markdown
from adaptlab.reporting.pretraining import is_stage, pretraining_section
from adaptlab.reporting.recommend import best_entry, is_usable, pareto_front, quality_key, recommend
from adaptlab.reporting.runs import (
    Run,
    Source,
    Warn,
    check_compatible,
    interval,
    load_predictions,
    load_run,
    load_sources,
)
from adaptlab.reporting.sections import RunResults
from adaptlab.reporting.selection import selection_section
from adaptlab.reporting.significance import no_test, pair
from adaptlab.runs.files import check_output_folder, write_text_atomic
from adaptlab.tasks import TASKS, Task, get_task


def build_report(dirs: list[Path], warn: Warn) -> Report:
    """Read, check and analyse the runs in ``dirs``; nothing is written."""
    sources = load_sources(dirs, warn)
    _overlap_warnings(sources, warn)
    runs = [r for s in sources for r in s.runs]
    check_compatible(runs)
    task_name = str(runs[0].task or "unknown")
    task = _known_task(task_name, warn)
    metric = str(runs[0].primary_metric or "value")
    hib = _higher_is_better(runs, metric)
    ok = sorted((r for r in runs if is_usable(r.entry())), key=lambda r: quality_key(r.entry(), hib))
    stages = [r for r in runs if is_stage(r)]  # pre-training stages (domain_mlm): no value, their own section
    runs = ok + [r for r in runs if not is_usable(r.entry()) and not is_stage(r)]
    colours = {r.name: i for i, r in enumerate(runs)}
    tests = _paired_tests(task, ok, metric, hib, warn)
    best = best_entry([r.entry() for r in ok], hib)
    tests = seed_aware_tests(tests, ok, best["rung"] if best else None, hib,
                             lambda b, r: _seed_test(task, b, r, metric, warn))
    rec = recommend([r.entry() for r in runs], {k: t.get("p_value") for k, t in tests.items()},
                    higher_is_better=hib, metric=metric)
    if any(r.result.seeds for r in ok):
        rec = dataclasses.replace(rec, rule=f"{rec.rule} {SEED_RULE}")
    never_ran = [n if len(sources) == 1 else f"{s.ladder}/{n}" for s in sources for n in s.never_ran]
    if never_ran:
        rec = dataclasses.replace(rec, reason=f"{rec.reason} This is among the finished rungs only: "
                                  f"{', '.join(never_ran)} never ran (no results), so they could not be compared."
                                  .strip())
    points = _points(sources, ok, colours)
    pareto = {
        name: pareto_front([(p.name, float(p.cost[name]), p.value) for p in points
                            if isinstance(p.cost.get(name), (int, float))], hib)
        for name, _, _ in C.COST_AXES
    }
    curves = C.learning_curves([(r.name, colours[r.name], r.metrics.get("history") or []) for r in ok])
    results = [RunResults(r.name, r.metrics, load_predictions(r, warn), r.name == rec.choice) for r in ok]
    sections = task.report_sections(results) if task is not None else []
    sections += [s for s in (tuning_section(ok, colours, metric, hib, tests), seeds_section(ok)) if s is not None]
    sections += [s for s in (data_efficiency_section(ok, colours, metric, hib),) if s is not None]  # train_sizes
    sections += [s for s in (selection_section(ok, colours, metric, hib),) if s is not None]  # weights kept
    sections += [s for s in (pretraining_section(ok, stages, lambda a, b: paired_test(task, a, b, metric, warn),
                                                 metric, hib),) if s is not None]  # gain of domain pre-training
    title = (f"{sources[0].ladder}: {task_name} on {runs[0].model or 'unknown model'}" if len(sources) == 1
             else f"{' vs '.join(s.ladder for s in sources)}: {task_name}")
    return Report(title, sources, runs, task_name, metric, hib, _test_n(runs), tests, rec,
                  C.quality_cost_charts(points, metric, hib), curves, pareto, sections, colours, [])


def _overlap_warnings(sources: list[Source], warn: Warn) -> None:
    """The ladders whose test examples also occur in their training split (leaderboard.json ``overlap``)."""
    for source in sources:
        found = (source.board or {}).get("overlap")
        message = overlap_warning(found) if isinstance(found, dict) else None
        if message:
            warn(message if len(sources) == 1 else f"{source.ladder}: {message}")


def _known_task(name: str, warn: Warn) -> Task | None:
    """The registered task the runs name, or None with a warning: the report then shows the generic parts only."""
    if name in TASKS:
        return get_task(name)
    warn(f"the runs' task '{name}' is not a registered task here ({TASKS.unknown_message(name)}); the report shows "
         "the generic leaderboard only: no paired tests and no task-specific sections. Install the plug-in that "
         "provides it to get them.")
    return None


def _paired_tests(task: Task | None, ok: list[Run], metric: str, hib: bool, warn: Warn) -> dict[str, dict]:
    """Each finished rung's paired test against the best one (not the best itself), keyed by run name."""
    best_e = best_entry([r.entry() for r in ok], hib)
    best = next((r for r in ok if r.name == best_e["rung"]), None) if best_e else None
    if best is None:
        return {}
    return {r.name: paired_test(task, best, r, metric, warn) for r in ok if r is not best}


def paired_test(task: Task | None, best: Run, run: Run, metric: str, warn: Warn) -> dict:
    """The task's paired significance test of ``run`` against ``best`` on their common test examples (by id)."""
    if task is None:
        return {**no_test("unknown task"), "n": 0}
    a, b = load_predictions(best, warn), load_predictions(run, warn)
    if not a or not b:
        return {**no_test("no predictions to pair"), "n": 0}
    a, b = pair(a, b)
    if not a:
        return {**no_test("no common example ids"), "n": 0}
    n = len(a)
    test = {**task.paired_test(a, b, metric), "n": n}
    if test["method"] is not None and not n == len(best.predictions or []) == len(run.predictions or []):
        test["detail"] = f"{test['detail']} on {n} common examples"
    return test


def _seed_test(task: Task | None, best_dir: Path, run_dir: Path, metric: str, warn: Warn) -> dict | None:
    """The paired test of one seed's run against the best rung's run of the same seed, with both values."""
    best, run = load_run(best_dir, "", None, warn), load_run(run_dir, "", None, warn)
    if best is None or run is None or best.value is None or run.value is None:
        return None
    return {**paired_test(task, best, run, metric, warn), "best_value": best.value, "value": run.value}


def _points(sources: list[Source], ok: list[Run], colours: dict[str, int]) -> list[C.Point]:
    """The finished rungs as chart points: quality, interval and cost, coloured by run, marked by ladder."""
    group_index = {r.ladder: i for i, s in enumerate(sources) for r in s.runs}
    return [C.Point(r.name, float(r.value), interval(r), r.cost, colours[r.name], group_index.get(r.ladder, 0))
            for r in ok]


def _higher_is_better(runs: list[Run], metric: str) -> bool:
    for r in runs:
        if isinstance(r.metrics.get("higher_is_better"), bool):
            return r.metrics["higher_is_better"]
        if r.board and isinstance(r.board.get("higher_is_better"), bool):
            return r.board["higher_is_better"]
    from adaptlab.evaluation.metrics import METRICS, higher_is_better

    return higher_is_better(metric) if metric in METRICS.names() else True


def _test_n(runs: list[Run]) -> int | None:
    """The number of test examples: the leaderboard's test split size, else the first metrics.json ``n``."""
    for r in runs:
        n = ((r.board or {}).get("split") or {}).get("test") or r.metrics.get("n")
        if isinstance(n, int):
            return n
    return None


def terminal_board(report: Report) -> dict:
    """A leaderboard dict in the shape :func:`adaptlab.reporting.table.leaderboard_table` prints."""
    return {
        "ladder": " vs ".join(s.ladder for s in report.sources),
        "task": report.task,
        "model": ", ".join(report.models()) or "-",
        "primary_metric": report.metric,
        "split": {"test": report.test_n if report.test_n is not None else "?"},
        "rungs": [r.entry() for r in report.runs],
    }


def write_report(dirs: list[Path], output: Path, quiet: bool = False) -> list[Path]:
    """Write ``output/report.md`` and ``output/report.html`` for the runs in ``dirs``; returns their paths.

    Prints the terminal leaderboard and the recommendation unless ``quiet``; warnings (skipped runs) always go
    to stderr and into the report. Raises UserError for input that cannot make a truthful report.
    """
    from rich.markup import escape

    from adaptlab.reporting.table import console_for

    err = console_for(stderr=True)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)

    check_output_folder(Path(output), "Pass --output (-o) a folder for report.md and report.html.")
    report = build_report([Path(d) for d in dirs], warn)
    report.warnings = warnings
    markdown = render_markdown(report)
    page = render_html(report)
    output = Path(output)
    paths = [output / "report.md", output / "report.html"]
    write_text_atomic(paths[0], markdown)
    write_text_atomic(paths[1], page)
    if not quiet:
        _print_summary(report)
    return paths


def _print_summary(report: Report) -> None:
    """The terminal leaderboard, its diagnoses and the recommendation."""
    from adaptlab.reporting.table import console_for, diagnosis_lines, leaderboard_table

    console = console_for()
    board = terminal_board(report)
    console.print(leaderboard_table(board))
    for line in diagnosis_lines(board):
        console.print(line, soft_wrap=True, highlight=False)
    rec = report.recommendation
    if rec.choice:
        console.print(f"[bold]recommended:[/bold] {rec.choice}. {rec.reason}", highlight=False)
        if rec.runner_up:
            console.print(f"runner-up: {rec.runner_up}. {rec.runner_up_reason}", highlight=False)
    else:
        console.print(f"[bold]no recommendation:[/bold] {rec.reason}", highlight=False)
