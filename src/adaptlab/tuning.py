"""A fair ladder: every tuned rung searched with the same budget, chosen on the validation split.

The pipeline runs the trials (:func:`adaptlab.pipeline.tune_rung`); this module keeps the search: what a trial
tries next (Optuna's TPE, seeded), when to give up on a trial (median pruning of intermediate validation scores),
when the budget is spent, which trial is best, and the record on disk::

    <output>/tuning/<rung>/search.json    the search's hash, space, budget and outcome (best and default trials)
    <output>/tuning/<rung>/trials.jsonl   every trial: number, params, state, validation score, curve, cost

Trial 0 is always the rung's configured (default) settings, so "tuned vs default" is measured on the same
validation split. The choice of trial ``n`` depends only on the seed, ``n`` and the trials before it (the sampler
is re-seeded per trial and the study rebuilt from the record), so a search continued with ``--resume`` makes the
same choices as one that was never interrupted. While a rung is tuned its data's test split is sealed
(:class:`SealedSplit`): a trial that reads it fails loudly, so the test split is read once, by the chosen settings.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.config import TuningSpec
from adaptlab.errors import UserError
from adaptlab.runs.files import read_jsonl, write_json_atomic, write_jsonl_atomic
from adaptlab.search_space import Dim, distribution, parse_dim, suggest

log = logging.getLogger(__name__)
TUNING_DIR = "tuning"
#: Trials before TPE models the space (random draws until then) and before the pruner judges a trial.
STARTUP_TRIALS = 3


class Pruned(Exception):
    """A trial stopped early: its intermediate validation score is below the median of earlier trials."""


class MetricMissing(UserError):
    """``tuning.metric`` is a metric, but not one this task computes: no trial can be scored, so the search stops."""


class SealedSplit:
    """Stands in for the test split while a rung is tuned: any use of it is a bug in the rung, so it raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the test split was read during tuning (.{name}); a search may only use train and "
                           "validation. This is a bug in the rung's method.")

    def __len__(self) -> int:
        raise RuntimeError("the test split was read during tuning (len); a search may only use train and validation.")


@dataclass
class Trial:
    """One trial's record (a line of trials.jsonl)."""

    number: int
    params: dict[str, Any]
    state: str = "complete"  # complete | pruned | failed
    value: float | None = None
    intermediate: list[float] = field(default_factory=list)  # validation scores at the evaluations, in order
    seconds: float = 0.0
    trainable_params: int | None = None
    steps: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_space(spec: TuningSpec, rung_name: str, declared: dict[str, Dim]) -> dict[str, Dim]:
    """The rung's space: its method's declared dimensions, each replaced or joined by ``tuning.space.<rung>``."""
    return {**declared, **{k: parse_dim(v) for k, v in spec.space.get(rung_name, {}).items()}}


def is_tuned(spec: TuningSpec | None, rung_name: str, space: dict[str, Dim]) -> bool:
    """Whether a rung is searched: tuning is on, the rung is among ``tuning.rungs`` (default all), it has a space."""
    return spec is not None and bool(space) and (spec.rungs is None or rung_name in spec.rungs)


class LiveTrial:
    """The trial being run: its number and params, and a scorer wrapper that reports to Optuna and prunes."""

    def __init__(self, number: int, params: dict[str, Any], handle: Any, pruning: bool):
        self.number, self.params, self.handle, self.pruning = number, params, handle, pruning
        self.intermediate: list[float] = []

    def reporting(self, score: Callable[[], float]) -> Callable[[], float]:
        """``score`` that also reports each value as the next intermediate step and raises :class:`Pruned`."""

        def wrapped() -> float:
            value = score()
            self.intermediate.append(value)
            self.handle.report(value, step=len(self.intermediate) - 1)  # step 0, the first evaluation, is warm-up
            if self.pruning and self.handle.should_prune():
                raise Pruned(f"validation score {value:.4g} at evaluation {len(self.intermediate)} is below the "
                             "median of earlier trials")
            return value

        return wrapped


class Search:
    """One rung's search: its record on disk, its budget and what to try next."""

    def __init__(self, folder: Path, digest: str, space: dict[str, Dim], spec: TuningSpec, *, metric: str,
                 higher_is_better: bool, seed: int, defaults: dict[str, Any]):
        self.folder, self.digest, self.space, self.spec = folder, digest, space, spec
        self.metric, self.higher_is_better, self.seed, self.defaults = metric, higher_is_better, seed, defaults
        self.trials: list[Trial] = []

    @classmethod
    def read(cls, folder: Path, digest: str, **kwargs: Any) -> Search | None:
        """The finished search recorded in ``folder`` with these settings, or None; changes nothing on disk."""
        if _recorded_digest(folder) != digest or not (folder / "trials.jsonl").is_file():
            return None
        search = cls(folder, digest, **kwargs)
        search.trials = _recorded_trials(folder)
        return search if search.done else None

    @classmethod
    def open(cls, folder: Path, digest: str, *, resume: bool, **kwargs: Any) -> Search:
        """The search in ``folder``: continued from its record when ``resume`` and the record was made with the same
        settings (``digest``), else started afresh (the old record removed)."""
        search = cls(folder, digest, **kwargs)
        if resume and _recorded_digest(folder) == digest:
            search.trials = _recorded_trials(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        search.write()
        return search

    # -- budget and choice -----------------------------------------------------------------------------------
    @property
    def spent_seconds(self) -> float:
        return sum(t.seconds for t in self.trials)

    @property
    def done(self) -> bool:
        """Whether the budget is spent: ``trials`` trials run, or ``minutes`` of trials."""
        by_count = self.spec.trials is not None and len(self.trials) >= self.spec.trials
        by_time = self.spec.minutes is not None and self.spent_seconds >= self.spec.minutes * 60
        return by_count or by_time

    @property
    def best(self) -> Trial | None:
        """The complete trial with the best validation score; ties to the earlier trial (the default first)."""
        complete = [t for t in self.trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
        if not complete:
            return None
        sign = -1.0 if self.higher_is_better else 1.0
        return min(complete, key=lambda t: (sign * t.value, t.number))

    def chosen_params(self) -> dict[str, Any]:
        """The params of the best trial, or the defaults when no trial completed."""
        best = self.best
        return dict(best.params) if best is not None else dict(self.defaults)

    def ask(self) -> LiveTrial:
        """The next trial: the defaults first, then TPE's suggestion given every recorded trial."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        number = len(self.trials)
        sampler = optuna.samplers.TPESampler(seed=self.seed * 10_007 + number, n_startup_trials=STARTUP_TRIALS)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=1)
        study = optuna.create_study(direction="maximize" if self.higher_is_better else "minimize", sampler=sampler,
                                    pruner=pruner)
        dists = {name: distribution(dim) for name, dim in self.space.items()}
        for trial in self.trials:
            frozen = _frozen(trial, dists)
            if frozen is not None:
                study.add_trial(frozen)
        handle = study.ask()
        params = dict(self.defaults) if number == 0 else {n: suggest(handle, n, d) for n, d in self.space.items()}
        return LiveTrial(number, params, handle, self.spec.pruning)

    # -- record ------------------------------------------------------------------------------------------------
    def record(self, trial: Trial) -> None:
        self.trials.append(trial)
        write_jsonl_atomic(self.folder / "trials.jsonl", [t.to_dict() for t in self.trials])
        self.write()

    def summary(self) -> dict[str, Any]:
        """What metrics.json and search.json say of the search."""
        best = self.best
        states = [t.state for t in self.trials]
        return {
            "metric": self.metric, "higher_is_better": self.higher_is_better,
            "budget": {"trials": self.spec.trials, "minutes": self.spec.minutes},
            "space": {name: dim.describe() for name, dim in self.space.items()},
            "trials": len(self.trials), "complete": states.count("complete"), "pruned": states.count("pruned"),
            "failed": states.count("failed"), "seconds": round(self.spent_seconds, 3),
            "default": {"params": self.defaults, "validation": self.trials[0].value if self.trials else None},
            "best": {"trial": best.number, "params": best.params, "validation": best.value} if best else None,
            "history": [{"trial": t.number, "state": t.state, "validation": t.value, "params": t.params,
                         "seconds": round(t.seconds, 3), "trainable_params": t.trainable_params}
                        for t in self.trials],
        }

    def write(self) -> None:
        write_json_atomic(self.folder / "search.json", {"sha256": self.digest, "done": self.done, **self.summary()})


def _recorded_trials(folder: Path) -> list[Trial]:
    """The trials recorded in ``folder``; none (the search starts again, with a warning) when the record can't be
    read (a truncated or hand-edited trials.jsonl)."""
    path = folder / "trials.jsonl"
    if not path.is_file():
        return []
    try:
        return [Trial(**t) for t in read_jsonl(path)]
    except (OSError, ValueError, TypeError) as exc:
        log.warning("%s can't be read (%s); the search starts again.", path, exc)
        return []


def _recorded_digest(folder: Path) -> str | None:
    try:
        return json.loads((folder / "search.json").read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError):
        return None


def _inside(dist: Any, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _frozen(trial: Trial, dists: dict[str, Any]) -> Any:
    """A recorded trial as an Optuna FrozenTrial (for TPE and the pruner), or None when its params fall outside the
    space (a default outside the searched range): it still counts for the best, not for the model of the space."""
    import optuna
    from optuna.trial import TrialState, create_trial

    if not all(name in trial.params and _inside(dist, trial.params[name]) for name, dist in dists.items()):
        return None
    state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(trial.state, TrialState.FAIL)
    value = trial.value if state == TrialState.COMPLETE else None
    try:
        return create_trial(params={n: trial.params[n] for n in dists}, distributions=dists, value=value,
                            state=state, intermediate_values=dict(enumerate(trial.intermediate)))
    except (ValueError, optuna.exceptions.OptunaError):
        return None
