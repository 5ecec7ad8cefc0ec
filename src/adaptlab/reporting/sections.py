"""What a task adds to the report: its own sections, computed from the finished rungs' results.

The report asks each run's task (:meth:`adaptlab.tasks.Task.report_sections`) for the parts only that task knows
how to show (a confusion matrix, outputs side by side, per-type tables...). This module holds the two small records
that pass between them; it imports nothing heavy, so a task module can import it freely.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunResults:
    """One finished rung as a task's report hook sees it."""

    #: the rung's name in the report (prefixed by its ladder when the report holds several ladders)
    name: str
    #: the rung's metrics.json (task, primary_metric, metrics, interval, and whatever the task's evaluate returned)
    metrics: dict
    #: the rung's predictions.jsonl records (the task's own record shape), or None when they are missing or unreadable
    records: list[dict] | None
    #: whether the report recommends shipping this rung
    recommended: bool = False


@dataclass(frozen=True)
class Section:
    """One part of the report, in both views.

    ``markdown`` is the text under a ``## {title}`` heading in report.md; ``html`` is the content under an
    ``<h2>{title}</h2>`` inside ``<section id="{id}">`` in report.html. Both are complete and already escaped (see
    :mod:`adaptlab.reporting.markup` for tables and escaping).
    """

    id: str
    title: str
    markdown: str
    html: str
