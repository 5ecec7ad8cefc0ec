"""The runs a report is made of: reading ladder and rung folders, and checking that they belong in one report.

Input: ladder output folders written by ``adaptlab compare`` (``leaderboard.json`` plus one folder per rung with
``metrics.json``, ``predictions.jsonl`` and ``run.json``), or single rung folders. Without a leaderboard, every
sub-folder holding a ``metrics.json`` is a run. Rungs are named by their rung name, prefixed by the ladder name
when the report holds more than one ladder (``rt_minilm/lora``).

Checks: a folder without runs, or runs of different tasks, primary metrics or data splits (``data_sha256``) in one
report, is a :class:`UserError` naming the runs on each side. A run whose ``metrics.json`` is missing or corrupted is
skipped with a warning naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adaptlab.errors import UserError
from adaptlab.runs.files import read_jsonl
from adaptlab.runs.result import RungResult

Warn = Callable[[str], None]


@dataclass
class Run:
    """One rung's results as read from its folder: ``metrics`` is metrics.json as written, ``result`` the same
    parsed as a :class:`RungResult` (a ValidationError when it is not a rung's result)."""

    name: str
    ladder: str
    rung: str
    path: Path
    metrics: dict
    info: dict = field(default_factory=dict)
    board: dict | None = None
    predictions: list[dict] | None = None
    result: RungResult = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.result = RungResult.model_validate(self.metrics)

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def value(self) -> float | None:
        return self.result.value

    @property
    def cost(self) -> dict:
        return self.result.cost

    @property
    def provenance(self) -> dict:
        return self.result.provenance

    @property
    def task(self) -> str | None:
        """The run's task; runs written before metrics.json recorded it take the leaderboard's."""
        return self.result.task or (self.board or {}).get("task")

    @property
    def primary_metric(self) -> str | None:
        return self.result.primary_metric or (self.board or {}).get("primary_metric")

    @property
    def data_sha256(self) -> str | None:
        return self.provenance.get("data_sha256") or (self.board or {}).get("data_sha256")

    @property
    def model(self) -> str | None:
        return self.provenance.get("model") or (self.board or {}).get("model")

    @property
    def failure(self) -> str:
        """Why an unusable run has no result, in words."""
        if self.result.error:
            return self.result.error
        if self.status != "ok":
            return f"status '{self.status}', no error recorded"
        return f"value {self.value!r} is not a finite number"

    def entry(self) -> dict:
        """The leaderboard entry, named by the report's run name."""
        r = self.result
        return {
            "rung": self.name, "method": r.method, "status": r.status, "value": r.value, "interval": r.interval,
            "metrics": r.metrics, "cost": r.cost, "error": r.error, "diagnosis": r.diagnosis, "seeds": r.seeds,
        }

    @property
    def flag(self) -> str:
        """'' or a short mark for a rung that learned nothing (degenerate) or is doubted."""
        d = self.result.diagnosis or {}
        return "DEGENERATE" if d.get("degenerate") else "doubted" if d.get("findings") else ""


@dataclass
class Source:
    """The runs read from one ladder folder."""

    path: Path
    ladder: str
    board: dict | None
    runs: list[Run]
    #: Rungs of the ladder (ladder.json) with no results: the ladder was interrupted or run with --rungs.
    never_ran: list[str] = field(default_factory=list)


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, what is wrong)."""
    if not path.is_file():
        return None, f"{path.name} is missing"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} is corrupted ({type(exc).__name__}: {str(exc)[:120]})"


def _is_run_dir(path: Path) -> bool:
    return any((path / f).exists() for f in ("metrics.json", "run.json", "predictions.jsonl"))


def load_run(path: Path, ladder: str, board: dict | None, warn: Warn) -> Run | None:
    metrics, problem = _read_json(path / "metrics.json")
    if problem is None and not (isinstance(metrics, dict) and "status" in metrics):
        problem = "metrics.json is corrupted (not a JSON object with a 'status' field)"
    info, _ = _read_json(path / "run.json")
    run = None
    if problem is None:
        rung = str(metrics.get("rung") or path.name)
        try:
            run = Run(rung, ladder, rung, path, metrics, info if isinstance(info, dict) else {}, board)
        except ValidationError as exc:  # e.g. a value that is not a number
            problem = f"metrics.json is corrupted ({_first_error(exc)})"
    if problem:
        warn(f"skipped run {path}: {problem}; re-run this rung (adaptlab compare CONFIG --rungs NAME) to replace it.")
    return run


def _first_error(exc: ValidationError) -> str:
    """The first thing wrong in a metrics.json, e.g. "value: Input should be a valid number"."""
    e = exc.errors()[0]
    return f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}"


def load_source(path: Path, warn: Warn) -> Source:
    """The runs of one ladder folder (or one rung folder); a UserError when there are none."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder. Pass a ladder output folder written by `adaptlab compare`.")
    single = (path / "metrics.json").exists() or (path / "run.json").exists()
    ladder_dir = path.parent if single else path
    board, problem = _read_json(ladder_dir / "leaderboard.json")
    if problem and (ladder_dir / "leaderboard.json").exists():
        warn(f"{ladder_dir / 'leaderboard.json'}: {problem}; reading the rung folders instead.")
    if not isinstance(board, dict) or not isinstance(board.get("rungs"), list):
        board = None
    if single:
        run_dirs = [path]
    elif board is not None:
        run_dirs = [path / str(e.get("dir") or e.get("rung")) for e in board["rungs"]]
    else:
        run_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_run_dir(p))
    if not run_dirs:
        raise UserError(
            f"{path}: no runs here (no leaderboard.json and no rung folders with a metrics.json). Pass a ladder "
            "output folder written by `adaptlab compare`, e.g. runs/rotten_tomatoes."
        )
    first_info, _ = _read_json(run_dirs[0] / "run.json")
    ladder = str((board or {}).get("ladder") or (first_info or {}).get("ladder") or ladder_dir.name)
    runs = [r for r in (load_run(d, ladder, board, warn) for d in run_dirs) if r is not None]
    if not runs:
        raise UserError(
            f"{path}: none of its {len(run_dirs)} run(s) could be read (see the warnings above); nothing to report."
        )
    never_ran = [] if single else _never_ran(ladder_dir, runs)
    if never_ran:
        warn(f"{ladder_dir}: {len(never_ran)} rung(s) of the ladder never ran ({', '.join(never_ran)}): they have "
             f"no results, so the comparison and the recommendation cover only the {len(runs)} rung(s) that did. "
             "Run them with `adaptlab compare CONFIG --resume`.")
    return Source(ladder_dir, ladder, board, runs, never_ran)


def _never_ran(ladder_dir: Path, runs: list[Run]) -> list[str]:
    """Rungs named in ladder.json (written when `compare` starts) that have no results folder."""
    spec, _ = _read_json(ladder_dir / "ladder.json")
    rungs = spec.get("rungs") if isinstance(spec, dict) else None
    if not isinstance(rungs, list):
        return []
    names = [str(r.get("name") or r.get("method")) for r in rungs if isinstance(r, dict)]
    have = {r.rung for r in runs} | {r.path.name for r in runs}
    return [n for n in names if n not in have and not (ladder_dir / n / "metrics.json").exists()]


def load_sources(dirs: list[Path], warn: Warn) -> list[Source]:
    """Read every folder; rung folders of the same ladder merge; names get a ladder prefix when ladders differ."""
    if not dirs:
        raise UserError("no folders given: pass one or more ladder output folders, e.g. runs/rotten_tomatoes.")
    merged: dict[Path, Source] = {}
    for d in dirs:
        src = load_source(Path(d), warn)
        key = src.path.resolve()
        if key not in merged:
            merged[key] = src
            continue
        seen = {r.path.resolve() for r in merged[key].runs}
        merged[key].runs.extend(r for r in src.runs if r.path.resolve() not in seen)
    sources = list(merged.values())
    if len(sources) > 1:
        names = [s.ladder for s in sources]
        for s in sources:
            prefix = s.ladder if names.count(s.ladder) == 1 else f"{s.ladder}@{s.path}"
            for r in s.runs:
                r.ladder = prefix
                r.name = f"{prefix}/{r.rung}"
    return sources


def check_compatible(runs: list[Run]) -> None:
    """Refuse runs of different tasks, primary metrics or data splits in one report, naming both sides."""
    checks = (
        ("task", "tasks", lambda r: r.task, "A report compares rungs of one task."),
        ("primary_metric", "primary metrics", lambda r: r.primary_metric, "Rungs are ranked by one primary metric."),
        (
            "data_sha256", "data splits (data_sha256, the hash of the train/validation/test split)",
            lambda r: r.data_sha256,
            "Rungs are compared on the same test examples: the same data, split sizes and seed give the same hash. "
            "Report them separately, or re-run one ladder with the other's data and split settings.",
        ),
    )
    for _field, what, get, why in checks:
        groups: dict[str, list[str]] = {}
        for r in runs:
            groups.setdefault(str(get(r) or "unknown"), []).append(r.name)
        if len(groups) > 1:
            lines = "\n".join(f"  - {value}: {', '.join(names)}" for value, names in groups.items())
            raise UserError(
                f"cannot put these runs in one report: they have different {what}:\n{lines}\n{why}"
            )


def load_predictions(run: Run, warn: Warn) -> list[dict] | None:
    """A finished run's prediction records (read once, then kept on the run), or None with a warning when they
    are missing or unreadable."""
    if run.predictions is None and run.status == "ok":
        path = run.path / "predictions.jsonl"
        try:
            run.predictions = read_jsonl(path)
        except FileNotFoundError:
            warn(f"{run.name}: {path} is missing; no paired test or examples for this run.")
            run.predictions = []
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            warn(f"{run.name}: {path} is corrupted ({exc}); no paired test or examples for this run.")
            run.predictions = []
        scored = run.result.details.get("n")  # every task records how many test records it scored
        if isinstance(scored, int) and run.predictions and len(run.predictions) != scored:
            warn(f"{run.name}: {path} holds {len(run.predictions)} records but the run scored {scored}; the file "
                 "was cut or changed, so no paired test or examples for this run. Run the rung again.")
            run.predictions = []
    return run.predictions or None


def interval(run: Run) -> tuple[float, float] | None:
    """The run's 95% interval of its primary metric, or None when metrics.json has none (or not a pair)."""
    iv = run.result.interval
    return (iv[0], iv[1]) if iv is not None and len(iv) == 2 else None
