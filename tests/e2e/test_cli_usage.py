"""Every command-line mistake the parser catches is a usage error (exit 2, usage line, message), never a crash.

The matrix is found from the app itself, so a new command or sub-command is covered without editing this file:
for each command and group, no arguments, an unknown option, a bad option value, a missing argument and --help.
Every case runs through the real entry point, ``adaptlab.cli.main``, where the error handling lives. The commands'
own functions are replaced by stubs, so a case that parses never trains, loads a model or starts a server.
"""

from __future__ import annotations

import functools
import inspect
import sys
import tempfile
import types
import typing
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
import typer.main

from adaptlab import cli
from adaptlab.errors import UserError

cli._load_command_modules()
ROOT = typer.main.get_command(cli.app)


def _walk(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(ROOT))


def _is_group(cmd) -> bool:
    return bool(getattr(cmd, "commands", None))


def _base_type(annotation) -> type | None:
    """int for ``int``, ``int | None``, ``list[int]``; None when it is not a single plain type."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list) and len(args) == 1:
        return _base_type(args[0])
    return annotation if isinstance(annotation, type) else None


def _hints(cmd) -> dict:
    callback = getattr(cmd, "callback", None)
    if callback is None:
        return {}
    try:
        return typing.get_type_hints(inspect.unwrap(callback))
    except Exception:  # hints the test cannot resolve: only that option's bad-value case falls back
        return {}


def _required(cmd) -> list[str]:
    """Command-line words that satisfy every required parameter (a value for each, in order)."""
    words: list[str] = []
    for p in cmd.params:
        if not p.required:
            continue
        if p.param_type_name == "argument":
            words.append("x")
        else:
            words += [p.opts[0], "1" if _base_type(_hints(cmd).get(p.name)) in (int, float) else "x"]
    return words


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    stream: str  # "out" or "err": where `expect` must appear
    expect: str
    runs: bool = False  # the command's function is reached (parsing succeeded)


def _cases():
    for path, cmd in COMMANDS:
        name = " ".join(path) or "adaptlab"
        yield f"{name}: --help", Case((*path, "--help"), 0, "out", "Usage")
        yield f"{name}: unknown option", Case((*path, "--bogus-flag"), 2, "err", "No such option: --bogus-flag")

        required = [p for p in cmd.params if p.required]
        if _is_group(cmd) or getattr(cmd, "no_args_is_help", False):
            yield f"{name}: no arguments", Case(path, 0, "out", "Usage")
        elif required:
            yield f"{name}: no arguments", Case(path, 2, "err", "Missing")
        else:
            yield f"{name}: no arguments", Case(path, 0, "out", "", runs=True)

        if required:  # all but the last required parameter
            words: list[str] = []
            for p in required[:-1]:
                words += ["x"] if p.param_type_name == "argument" else [p.opts[0], "x"]
            yield f"{name}: missing argument", Case((*path, *words), 2, "err", "Missing")

        options = [p for p in cmd.params if p.param_type_name == "option" and p.opts[0].startswith("--")]
        hints = _hints(cmd)
        numeric = [p for p in options if not p.is_flag and _base_type(hints.get(p.name)) in (int, float)]
        valued = [p for p in options if not p.is_flag]
        flags = [p for p in options if p.is_flag and not getattr(p, "secondary_opts", None)]
        before = (*path, *_required(cmd))
        if numeric:
            bad = Case((*before, numeric[0].opts[0], "abc"), 2, "err", "Invalid value")
        elif valued:  # a value-taking option given no value
            bad = Case((*before, valued[0].opts[0]), 2, "err", "requires an argument")
        elif flags:  # a flag given a value
            bad = Case((*before, f"{flags[0].opts[0]}=abc"), 2, "err", "does not take a value")
        else:
            continue
        yield f"{name}: bad option value", bad


CASES = dict(_cases())


@pytest.fixture
def stubbed(monkeypatch):
    """Replace every command's function with a stub that records the call (same signature, so the same parsing)."""
    called: list[str] = []

    def stub_for(fn):
        @functools.wraps(fn)
        def stub(*args, **kwargs):
            called.append(fn.__name__)

        return stub

    def patch(app: typer.Typer) -> None:
        for info in app.registered_commands:
            monkeypatch.setattr(info, "callback", stub_for(info.callback))
        for group in app.registered_groups:
            patch(group.typer_instance)

    patch(cli.app)
    return called


def run_main(monkeypatch, capsys, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    crash_dir = tmp_path / "tmp"
    crash_dir.mkdir(exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(crash_dir))  # where a crash log would go
    monkeypatch.setattr(sys, "argv", ["adaptlab", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        cli.main()
        raise SystemExit(0)
    out = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else (0 if exc.value.code is None else 1)
    assert "internal error" not in out.err + out.out, out.err
    assert "Traceback" not in out.err, out.err
    assert not list(crash_dir.glob("adaptlab-crash-*")), "a usage error wrote a crash log"
    return code, out.out, out.err


def test_matrix_covers_every_command():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "compare", "runs", "runs list", "runs show", "predict", "export", "serve"} <= names
    covered = {key.split(":")[0] for key in CASES}
    assert covered == {n or "adaptlab" for n in names}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_usage(case: Case, stubbed, monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, tmp_path, *case.args)
    assert code == case.code, f"adaptlab {' '.join(case.args)}: exit {code}\n{out}\n{err}"
    assert case.expect in (out if case.stream == "out" else err), f"{out}\n{err}"
    assert bool(stubbed) == case.runs, stubbed
    if case.code == 2:
        assert "Usage: adaptlab" in err, err  # the usage line of the command that was mistyped
        assert "Error:" in err, err


def test_mistyped_command_suggests_the_right_one(stubbed, monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, tmp_path, "comapre", "examples/rotten_tomatoes.yaml")
    assert code == 2
    assert "Usage: adaptlab [OPTIONS] COMMAND" in err
    assert "No such command 'comapre'" in err and "Did you mean 'compare'?" in err
    assert not stubbed


def test_missing_option_value_shows_the_command_usage(stubbed, monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, tmp_path, "compare", "x.yaml", "--rungs")
    assert code == 2
    assert "Usage: adaptlab compare" in err and "Option '--rungs' requires an argument" in err


def test_version(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, tmp_path, "--version")
    assert code == 0
    assert out.strip() == f"adaptlab {version('adaptlab')}"


def test_nothing_prints_the_help(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, tmp_path)
    assert code == 0
    assert "Usage: adaptlab" in out and "compare" in out and "--version" in out
    assert not err.strip()


def test_user_errors_still_exit_2_and_bugs_still_exit_1(monkeypatch, capsys, tmp_path):
    """The usage-error branch must not swallow the two other outcomes of main()."""
    code, out, err = run_main(monkeypatch, capsys, tmp_path, "validate", str(tmp_path / "missing.yaml"))
    assert code == 2 and "error:" in err

    def boom() -> None:
        raise RuntimeError("a bug [/bold] in [b]")  # brackets in a message are text, not rich markup

    info = next(i for i in cli.app.registered_commands if i.callback is cli.compare)
    monkeypatch.setattr(info, "callback", functools.wraps(cli.compare)(lambda *a, **k: boom()))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["adaptlab", "compare", "x.yaml"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 1
    assert "internal error: RuntimeError: a bug [/bold] in [b]" in capsys.readouterr().err
    info.callback = functools.wraps(cli.compare)(lambda *a, **k: (_ for _ in ()).throw(UserError("e.g. [b] or [/i]")))
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "error: e.g. [b] or [/i]" in capsys.readouterr().err
    assert list(tmp_path.glob("adaptlab-crash-*.log"))
