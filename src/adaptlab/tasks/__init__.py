"""Tasks: what is being learned, how examples look, how predictions are scored.

A task is a small registered plug-in (one module each). It turns loaded data frames into task data, asks a
method for predictions on a split and writes them as records, and scores records with its metrics. The primary
metric is what the ladder ranks rungs by.

The report (``adaptlab report``) reads a run's task from its metrics.json and asks that task, never the shape of
the records, what to show. A new task implements two members for it: :meth:`Task.paired_test` (the significance
test of a rung against the best one; build it from :mod:`adaptlab.reporting.significance`) and
:meth:`Task.report_sections` (its own sections, e.g. per-type tables or highlighted worst examples, as
:class:`~adaptlab.reporting.sections.Section` records rendered with :mod:`adaptlab.reporting.markup`); return
``[]`` to show only the generic leaderboard. Nothing in ``adaptlab.reporting`` needs to change.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Protocol

from adaptlab.registry import Registry
from adaptlab.reporting.sections import RunResults, Section


class Task(Protocol):
    name: str
    #: the pydantic model of this task's ``task:`` settings (``type`` and the task's own fields)
    Settings: type
    primary_metric: str
    #: The metric validation scores rank checkpoints (``select_best: metric``, early stopping) and tuning trials by:
    #: the primary metric, unless it can't be computed on the validation split at each evaluation (a judge's).
    selection_metric: str
    #: what `adaptlab export` builds for a run of this task: "classifier", "decoder", "tagger" (None: no export)
    export_kind: str | None
    #: the data spec field whose column stratifies the split (e.g. "label_column"), or None
    stratify_role: str | None
    #: how many test examples are predicted one at a time to measure latency
    latency_examples: int

    def prepare(self, spec: Any, frames: dict[str, Any]) -> Any:
        """Validate the data frames (train/validation/test) and return the task's data object."""

    def fingerprint(self, data: Any) -> str:
        """A hash of every split's ids, inputs and references: what the rungs' resume hash and provenance name."""

    def inputs(self, split: Any) -> list[str]:
        """Each example's input in ``split`` (one of ``data``'s splits) as one text, in order: what the ladder's
        overlap check (:mod:`adaptlab.data.overlap`) looks for in the training split."""

    def strata(self, data: Any) -> list[str]:
        """The class of each example of ``data.train``, in order: what a data-efficiency curve (``train_sizes:``)
        draws the same number of examples per class by. Asked only of tasks that declare a ``stratify_role``."""

    def encoder_objective(self, label_names: list[str], settings: dict) -> Any:
        """How the encoder rungs (head_only, top_layers, lora, full) learn this task: an object with ``build``,
        ``load``, ``dataset``, ``collator``, ``label_ids``, ``predict``, ``peft_task_type``, ``probe_unit``,
        ``min_steps`` and ``default_class_weight`` (see ``tasks/_sequence_objective.py``). A task they can't
        learn raises UserError."""

    def predict(self, method: Any, split: Any) -> list[dict]:
        """Prediction records for a split: id, input, reference, prediction, scores."""

    def evaluate(self, records: list[dict], meta: dict) -> dict:
        """Metrics (incl. an interval for the primary metric) computed from records alone."""

    def score(self, records: list[dict], meta: dict) -> dict[str, float]:
        """The ``metrics`` of :meth:`evaluate` (the primary metric among them, the same values), without intervals
        or per-class detail: cheap enough to score the validation split at every evaluation during training."""

    def predict_one(self, method: Any, split: Any, i: int) -> Any:
        """Predict example ``i`` of ``split`` alone (what latency measures)."""

    def baselines(self, data: Any, seed: int) -> dict[str, dict]:
        """Trivial reference points on the test split, e.g. {"majority_class": {"value", "interval", "note"}}: every
        trained rung should clear them. Empty when the task has none."""

    def diagnose(self, records: list[dict], fit: dict, data: Any) -> dict | None:
        """Whether the rung's result is real: {"degenerate", "doubted", "findings", "advice"}, or None when the
        task has no such check. A degenerate rung is flagged everywhere and never recommended."""

    def judge(self, method: Any, records: list[dict], site: Any) -> dict:
        """Judges beyond the task's own metrics, run after :meth:`evaluate` on the rung's test ``records`` with the
        rung ``method`` itself (``task.judges``: a reward run, an LLM judge, a benchmark; see :mod:`adaptlab.judging`,
        ``site`` a :class:`~adaptlab.judging.JudgeSite`). Returns ``{"metrics", "interval", "judges"}`` (the last a
        detail record for metrics.json), all empty when the task has no judges or none is configured."""

    def judge_inputs(self) -> tuple[str | None, str | None]:
        """What a judged rung's result depends on beyond the rung itself, for its resume hash: (the rung whose test
        outputs the judges compare with, a digest of the finished runs the judges load), each None when none."""

    def judge_ladder(self, ranked: list[str], site: Any) -> dict[str, dict]:
        """Judging that needs the whole ladder, run once every rung has (``task.judges.against: best``): {rung:
        {"metrics", "interval", "judges"}} to add to each finished rung's results; ``ranked`` are the finished
        rungs that wrote test outputs, best first. {} when the task has none."""

    # -- report (see the module docstring) --------------------------------------------------------------------------
    def paired_test(self, best: list[dict], other: list[dict], metric: str) -> dict:
        """The paired significance test of one rung's prediction records (``other``) against the best rung's
        (``best``) on ``metric``, the ladder's primary metric. The records are this task's own (as ``predict``
        wrote them), already paired: the same test examples, matched by id, in the same order. Returns
        ``{"method": name or None, "p_value": float or None, "detail": words, ...}``, as the functions of
        :mod:`adaptlab.reporting.significance` build it (``no_test(why)`` when the metric gives nothing to pair;
        the recommendation then compares intervals)."""

    def report_sections(self, runs: list[RunResults]) -> list[Section]:
        """This task's own sections of the report, shown after the charts (e.g. confusion matrices, outputs side
        by side), from the finished rungs in leaderboard order (best first), each with its metrics.json and its
        prediction records (None when they could not be read). ``[]`` when the task has none."""


TASKS: Registry[type] = Registry("task")


def get_task(name: str) -> Task:
    return TASKS.get(name)()


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
