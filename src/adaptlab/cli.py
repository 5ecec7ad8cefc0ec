"""adaptlab command line.

    adaptlab compare examples/rotten_tomatoes.yaml        # every rung on the same split, then the leaderboard
    adaptlab run examples/rotten_tomatoes.yaml --rung lora
    adaptlab runs list
    adaptlab predict runs/rotten_tomatoes/lora "a gorgeous, witty, seductive movie"

User mistakes exit with code 2 and one message naming the file, row or field; internal errors exit with 1.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from adaptlab.errors import UserError
from adaptlab.reporting.table import console_for

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Prompt or adapt? Run the adaptation ladder.")
runs_app = typer.Typer(no_args_is_help=True, help="The run registry.")
app.add_typer(runs_app, name="runs")
console = console_for()
err_console = console_for(stderr=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("adaptlab")
        except PackageNotFoundError:  # run from a source tree that is not installed
            from adaptlab import __version__ as number
        typer.echo(f"adaptlab {number}")
        raise typer.Exit()


@app.callback()
def _app_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


def _progress(total: int):
    state = {"i": 0, "current": None}
    status = console.status("starting")

    def update(rung: str, stage: str) -> None:
        base = rung.split(" (")[0]  # "lora (seed 1)", "lora (default settings)": still rung lora
        if base != state["current"]:
            state["current"] = base
            state["i"] += 1
        if stage in ("ok", "failed") or stage.startswith("already"):
            colour = {"ok": "green", "failed": "red"}.get(stage, "cyan")
            status.stop()
            console.print(f"[{state['i']}/{total}] {rung}: [{colour}]{stage}[/{colour}]")
        else:
            status.update(f"[{state['i']}/{total}] {rung}: {stage}")
            status.start()

    return update, status


@app.command()
def compare(
    config: Path = typer.Argument(..., help="Ladder spec (YAML)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output folder (default: from the config)."),
    resume: bool = typer.Option(False, help="Skip finished rungs, continue interrupted ones from checkpoints."),
    rungs: str | None = typer.Option(None, help="Comma-separated rung names to run (default: all)."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle checkpoints (.bin/.pt). Unpickling runs code."),
    check_repro: str | None = typer.Option(None, help="Re-run this finished rung and diff it with the record."),
) -> None:
    """Run every rung of the ladder on the same split and print the leaderboard."""
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare as run_compare
    from adaptlab.pipeline import prepare
    from adaptlab.reporting.table import diagnosis_lines, leaderboard_table

    spec = load_ladder(config)
    spec.allow_pickle = spec.allow_pickle or allow_pickle
    only = rung_names(spec, rungs)
    try:
        with console.status("loading data and model"):
            ladder = prepare(spec, output)
    except KeyboardInterrupt:
        _interrupted(config, output or spec.output_path(), output, rungs)
    if check_repro:
        _check_repro(ladder, check_repro)
        return
    from adaptlab.distributed import is_main

    if not is_main():  # another process of a run on several (torchrun): trains with the main one, prints nothing
        _follow_compare(ladder, resume, only)
        return
    d = ladder.data
    console.print(
        f"[bold]{spec.name}[/bold]: {spec.task.type}, model {escape(spec.model)}, split train={len(d.train)} "
        f"validation={len(d.validation)} test={len(d.test)} (seed {spec.seed}) -> {escape(str(ladder.output))}"
    )
    update, status = _progress(len(only or spec.rungs))
    try:
        board = run_compare(ladder, resume=resume, only=only, progress=update)
    except KeyboardInterrupt:
        status.stop()
        _interrupted(config, ladder.output, output, rungs)
    finally:
        status.stop()
    console.print(leaderboard_table(board))
    for line in diagnosis_lines(board):
        console.print(line, soft_wrap=True, highlight=False)
    _after_compare(ladder.output, board)
    failed = [e for e in board["rungs"] if e["status"] != "ok"]
    if failed:
        for e in failed:  # in full: the table cell is short
            log = ladder.output / e["dir"] / "error.log"
            err_console.print(f"[bold red]rung {escape(e['rung'])} failed:[/bold red] "
                              f"{escape(e.get('error') or 'unknown error')} (traceback: {escape(str(log))})",
                              highlight=False, soft_wrap=True)
        err_console.print(f"{len(failed)} of {len(board['rungs'])} rung(s) failed.", highlight=False)
        raise typer.Exit(1)


def _follow_compare(ladder: Any, resume: bool, only: list[str] | None) -> None:
    """A process other than the main one: it fits the trained rungs with the main process, silently."""
    from adaptlab.pipeline import compare as run_compare

    try:
        run_compare(ladder, resume=resume, only=only)
    except KeyboardInterrupt:  # Ctrl-C reaches every process; the main one says how to resume
        raise typer.Exit(130) from None


def rung_names(spec: Any, rungs: str | None) -> list[str] | None:
    """The rungs ``--rungs`` names (None: every rung), each once and each a rung of the ladder."""
    if rungs is None:
        return None
    names = [r.strip() for r in rungs.split(",")]
    if not any(names) or "" in names:
        raise UserError(f"--rungs {rungs!r} has an empty name; give comma-separated rung names, e.g. --rungs "
                        f"{','.join(r.run_name for r in spec.rungs[:2])}.")
    for name in names:
        spec.rung(name)  # an unknown name is a UserError with "did you mean"
    return list(dict.fromkeys(names))


def _interrupted(config: Path, folder: Path, output: Path | None, rungs: str | None) -> None:
    """Ctrl-C: say what is kept and the command that resumes, then exit 130 (the shell's code for SIGINT)."""
    again = ["adaptlab compare", str(config), *(["--output", str(output)] if output else []),
             *(["--rungs", rungs] if rungs else []), "--resume"]
    err_console.print(
        f"interrupted: finished rungs are kept in {folder}; the interrupted rung continues from its last checkpoint "
        f"when you resume: {' '.join(again)}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def _check_repro(ladder, rung: str) -> None:
    from adaptlab.pipeline import check_repro

    with tempfile.TemporaryDirectory(prefix="adaptlab-repro-") as scratch:
        with console.status(f"re-running {rung}"):
            result = check_repro(ladder, rung, Path(scratch))
    if result["identical"]:
        console.print(f"[green]reproduced[/green]: {rung} gives identical predictions and metrics.")
        return
    console.print(f"[red]not reproduced[/red]: {rung}")
    for d in result["differences"]:
        console.print(f"  - {d}", soft_wrap=True, markup=False)
    raise typer.Exit(1)


def _after_compare(output: Path, board: dict) -> None:
    """Hook for the report (written when the reporting package provides it)."""
    try:
        from adaptlab.reporting.report import write_report
    except ImportError:
        return
    paths = write_report([output], output, quiet=True)
    console.print(f"report: {', '.join(str(p) for p in paths)}", markup=False)


@app.command()
def run(
    config: Path = typer.Argument(..., help="Ladder spec (YAML)."),
    rung: str = typer.Option(..., "--rung", "-r", help="The rung to run."),
    output: Path | None = typer.Option(None, "--output", "-o"),
    resume: bool = typer.Option(False, help="Continue from the rung's last checkpoint."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle checkpoints (.bin/.pt). Unpickling runs code."),
) -> None:
    """Run one rung of a ladder."""
    compare(config, output=output, resume=resume, rungs=rung, allow_pickle=allow_pickle, check_repro=None)


@app.command()
def report(
    dirs: list[Path] = typer.Argument(..., help="One or more ladder output folders (e.g. runs/rotten_tomatoes)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write report.md/html (default: first)."),
) -> None:
    """Write report.md and a self-contained report.html comparing rungs (and ladders) on quality and cost."""
    from adaptlab.reporting.report import write_report

    for path in write_report(list(dirs), output or dirs[0]):
        console.print(f"wrote {path}", markup=False)


@app.command()
def validate(config: Path = typer.Argument(..., help="Ladder spec (YAML).")) -> None:
    """Check a config and that its data files exist, without reading them or running anything (`adaptlab plan`
    also reads the data, loads the model and checks each rung against them)."""
    from adaptlab.config import load_ladder
    from adaptlab.data.source import check_data_files

    spec = load_ladder(config)
    check_data_files(spec)
    names = ", ".join(r.run_name for r in spec.rungs)
    console.print(f"[green]ok[/green]: {spec.name}, {len(spec.rungs)} rungs: {escape(names)}. The data and model are "
                  "read when it runs; `adaptlab plan` checks them (and each rung against them) first.",
                  highlight=False)


@app.command()
def methods() -> None:
    """List the registered tasks and methods (rungs)."""
    from adaptlab.methods import METHODS
    from adaptlab.tasks import TASKS

    console.print(f"tasks: {', '.join(TASKS.names())}")
    for name in METHODS.names():
        cls = METHODS.get(name)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        console.print(f"  [bold]{name}[/bold] ({', '.join(sorted(cls.tasks))}): {doc}", highlight=False)
        if cls.search_space:  # what `tuning:` searches by default
            space = ", ".join(f"{k} {d.describe()}" for k, d in cls.search_space.items())
            console.print(f"      tuning searches: {space}", highlight=False, markup=False)


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A finished rung folder, e.g. runs/rotten_tomatoes/lora."),
    texts: list[str] = typer.Argument(..., help="Text(s) to classify."),
    pair: str | None = typer.Option(None, help="Second text, for text-pair tasks."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Predict with a trained rung."""
    from adaptlab.bundle import pair_mismatch, trained_on_pairs
    from adaptlab.pipeline import load_run
    from adaptlab.runs.files import read_run_json

    run_file = run_dir / "run.json"
    if run_file.is_file():  # before loading weights: a rung trained on single texts takes no --pair, and back
        info = read_run_json(run_file)
        _check_predictable(run_dir, info)
        problem = pair_mismatch(f"{run_dir}: this rung", trained_on_pairs(info), pair is not None, "--pair")
        if problem:
            raise UserError(problem)
    task, method, _ = load_run(run_dir)
    if task.export_kind == "tagger":
        _print_entities(texts, method, as_json)
        return
    if task.export_kind == "embedder":
        _print_similarities(texts, method, as_json)
        return
    probs = method.predict_proba(list(texts), [pair] * len(texts) if pair is not None else None)
    out = []
    for text, row in zip(texts, probs):
        scores = {n: round(float(p), 4) for n, p in zip(method.label_names, row)}
        out.append({"text": text, "label": max(scores, key=scores.get), "scores": scores})
    if as_json:
        console.print_json(json.dumps(out))
        return
    for o in out:
        ranked = ", ".join(f"{k} {v:.3f}" for k, v in sorted(o["scores"].items(), key=lambda kv: -kv[1]))
        console.print(f"[bold]{escape(o['label'])}[/bold]  ({escape(ranked)})  {escape(o['text'])}", highlight=False)


def _check_predictable(run_dir: Path, info: dict) -> None:
    """UserError, before any weights load, for a rung of a task whose rungs `predict` can't run (generation,
    preference pairs)."""
    from adaptlab.tasks import TASKS, get_task

    task = (info.get("context") or {}).get("task") if isinstance(info.get("context"), dict) else None
    if isinstance(task, str) and task in TASKS and get_task(task).export_kind not in ("classifier", "tagger",
                                                                                        "embedder"):
        raise UserError(f"{run_dir}: a rung of a {task} task; `adaptlab predict` classifies, tags and embeds. A rung "
                        f'that writes text generates with: adaptlab generate {run_dir} "your prompt".')


def _print_similarities(texts: list[str], method: Any, as_json: bool) -> None:
    """Sentence embeddings: each text's size and its cosine similarity to every other text given."""
    vectors = method.encode(list(texts))
    sims = vectors @ vectors.T
    out = [{"text": t, "dimensions": int(vectors.shape[1]),
            "cosine": {str(j): round(float(sims[i, j]), 4) for j in range(len(texts)) if j != i}}
           for i, t in enumerate(texts)]
    if as_json:
        console.print_json(json.dumps(out))
        return
    for i, o in enumerate(out):
        shown = ", ".join(f"#{j} {v:.3f}" for j, v in o["cosine"].items()) or "give two texts or more to compare"
        console.print(f"#{i} [{o['dimensions']} dims] cosine: {shown}  |  {o['text']}", markup=False, highlight=False)


def _print_entities(texts: list[str], method: Any, as_json: bool) -> None:
    """Token classification: each text's entities with character offsets."""
    from adaptlab.tasks.token_classification.ship import MethodTagger

    out = [{"text": t, **found} for t, found in zip(texts, MethodTagger(method).predict(list(texts)))]
    if as_json:
        console.print_json(json.dumps(out))
        return
    for o in out:
        shown = "; ".join(f"{e['text']} [{e['label']}] {e['start']}-{e['end']}" for e in o["entities"]) or "no entity"
        console.print(f"{shown}  |  {o['text']}", markup=False, highlight=False)


@runs_app.command("list")
def runs_list(ladder: str | None = typer.Option(None, help="Only runs of this ladder.")) -> None:
    """What has run, with its primary metric."""
    from rich.table import Table

    from adaptlab.runs.registry import db_path, list_runs

    rows = list_runs(ladder)
    if not rows:
        console.print(f"no runs recorded in {db_path()}")
        return
    table = Table(title=f"runs ({db_path()})")
    columns = ("ladder", "rung", "method", "model", "status", "metric", "value [95% CI]", "train s", "updated", "path")
    for col in columns:
        table.add_column(col, no_wrap=col != "path", overflow="fold")
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
        status = r["status"] if r["status"] == "ok" else f"[red]{r['status']}[/red]"
        secs = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.1f}"
        table.add_row(r["ladder"], r["rung"], r["method"], r["model"], status, r["metric"] or "-", value, secs,
                      r["updated"][:16].replace("T", " "), r["path"])
    console.print(table)


@runs_app.command("show")
def runs_show(run_dir: Path = typer.Argument(..., help="A rung folder.")) -> None:
    """Metrics, cost and provenance of one run."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no metrics.json here; pass a rung folder such as runs/<ladder>/<rung>.")
    from adaptlab.runs.files import read_run_json

    m = read_run_json(path)
    console.print_json(json.dumps({k: m.get(k) for k in ("rung", "method", "status", "error", "metrics",
                                                         "intervals", "cost", "provenance")}))


#: Modules that add their own commands to ``app`` (each imports ``app`` from here and decorates functions).
COMMAND_MODULES = ("adaptlab.generation.commands", "adaptlab.export.commands", "adaptlab.serving.commands",
                   "adaptlab.topics.commands", "adaptlab.planning_commands")


def _load_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if not (e.name and name.startswith(e.name)):
                raise


def _cli_error_types() -> tuple[type[Exception], ...]:
    """The exceptions the installed typer raises for command-line mistakes (show them, exit with their code).

    typer >= 0.2x carries its own copy of click: its errors derive from ``typer.TyperException``, not from
    ``click.ClickException``. Older typers raise click's own. Both are caught, whichever this install has.
    """
    types: list[type[Exception]] = []
    if hasattr(typer, "TyperException"):
        types.append(typer.TyperException)
    try:
        import click
    except ImportError:  # typer that carries its own click does not need the real one
        pass
    else:
        types.append(click.ClickException)
    return tuple(types)


def _bare_call_of_help_only_command(e: Exception, argv: list[str]) -> bool:
    """``adaptlab`` or ``adaptlab runs`` alone: a group that answers no arguments with its help (no_args_is_help).

    click >= 8.2 signals that with a usage error (exit 2) after the help is printed; here it is the answer, exit 0.
    """
    ctx = getattr(e, "ctx", None)
    if ctx is None or not getattr(ctx.command, "no_args_is_help", False):
        return False
    depth, parent = 0, ctx.parent
    while parent is not None:
        depth, parent = depth + 1, parent.parent
    return len(argv) == depth  # nothing typed after the command's own name


def _context_from_argv(argv: list[str]):
    """The context of the deepest command named in argv, for usage errors raised without one (typer's parser
    drops it from "Option '--x' requires an argument"), so that they too show the usage line."""
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("adaptlab", [], resilient_parsing=True)
    for word in argv:
        sub = cmd.get_command(ctx, word) if hasattr(cmd, "get_command") and not word.startswith("-") else None
        if sub is None:
            continue
        cmd, ctx = sub, sub.make_context(word, [], parent=ctx, resilient_parsing=True)
    return ctx


def main() -> None:
    """Entry point: user errors -> exit 2 with one message; internal errors -> exit 1, traceback saved to a file."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # load reports and warnings: not for end users
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notes are not for users
    argv = sys.argv[1:]
    cli_errors = _cli_error_types()
    try:
        _load_command_modules()
        code = app(args=argv, prog_name="adaptlab", standalone_mode=False)  # returns a typer.Exit's code
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as e:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except cli_errors as e:  # a mistake on the command line: usage, message (with "Did you mean"), exit 2
        if _bare_call_of_help_only_command(e, argv):
            help_text = e.format_message()  # plain click puts the help here; rich typer has printed it already
            if help_text.strip():
                typer.echo(help_text)
            sys.exit(0)
        show = getattr(e, "show", None)
        if show is not None:
            if hasattr(e, "ctx") and e.ctx is None:
                try:
                    e.ctx = _context_from_argv(argv)
                except Exception:  # the usage line is a courtesy; the message below is what matters
                    pass
            show()
        else:
            typer.echo(f"Error: {e.format_message()}", err=True)
        sys.exit(getattr(e, "exit_code", 2))
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished rungs are kept, resume with --resume")
        sys.exit(130)
    except Exception as e:  # everything else is our bug
        fd, log = tempfile.mkstemp(prefix="adaptlab-crash-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(traceback.format_exc())
        err_console.print(f"[bold red]internal error:[/bold red] {type(e).__name__}: {escape(str(e))}\n(traceback: "
                          f"{log})", highlight=False)
        sys.exit(1)

if __name__ == "__main__":
    main()
