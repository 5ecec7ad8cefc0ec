"""Tasks: what is being learned, how examples look, how predictions are scored.

A task is a small registered plug-in (one module each). It turns loaded data frames into task data, asks a
method for predictions on a split and writes them as records, and scores records with its metrics. The primary
metric is what the ladder ranks rungs by.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Protocol

from adaptlab.registry import Registry


class Task(Protocol):
    name: str
    primary_metric: str
    #: the data spec field whose column stratifies the split (e.g. "label_column"), or None
    stratify_role: str | None
    #: how many test examples are predicted one at a time to measure latency
    latency_examples: int

    def prepare(self, spec: Any, frames: dict[str, Any]) -> Any:
        """Validate the data frames (train/validation/test) and return the task's data object."""

    def predict(self, method: Any, split: Any) -> list[dict]:
        """Prediction records for a split: id, input, reference, prediction, scores."""

    def evaluate(self, records: list[dict], meta: dict) -> dict:
        """Metrics (incl. an interval for the primary metric) computed from records alone."""

    def predict_one(self, method: Any, split: Any, i: int) -> Any:
        """Predict example ``i`` of ``split`` alone (what latency measures)."""

    def baselines(self, data: Any, seed: int) -> dict[str, dict]:
        """Trivial reference points on the test split, e.g. {"majority_class": {"value", "interval", "note"}}: every
        trained rung should clear them. Empty when the task has none."""

    def diagnose(self, records: list[dict], fit: dict, data: Any) -> dict | None:
        """Whether the rung's result is real: {"degenerate", "doubted", "findings", "advice"}, or None when the
        task has no such check. A degenerate rung is flagged everywhere and never recommended."""


TASKS: Registry[type] = Registry("task")


def get_task(name: str) -> Task:
    return TASKS.get(name)()


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
