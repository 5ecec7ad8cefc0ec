"""What the report shows for preference pairs: every rung's accuracy (with its interval) and margin, then the pairs
the best rung gets most wrong. The paired test of a rung against the best is McNemar's test on per-pair
correctness (the margin's scale is each rung's own, so it is not compared across rungs).
"""

from __future__ import annotations

from typing import Any

from adaptlab.reporting.markup import cell, clip, esc, fmt, md_table, table
from adaptlab.reporting.sections import RunResults, Section
from adaptlab.reporting.significance import mcnemar_test, no_test

HARDEST = 8


def paired_test(best: list[dict], other: list[dict], metric: str) -> dict:
    if not best:
        return no_test("no paired examples")
    if metric != "preference_accuracy":
        return no_test(f"{metric} is on each rung's own scale; only preference_accuracy is compared across rungs")
    return mcnemar_test([bool(r["correct"]) for r in best], [bool(r["correct"]) for r in other])


def report_sections(runs: list[RunResults]) -> list[Section]:
    if not runs:
        return []
    sections = [_metrics_section(runs)]
    if runs[0].records:
        sections.append(_hardest_section(runs[0]))
    return sections


def _interval(value: Any, interval: Any) -> str:
    if isinstance(interval, list) and len(interval) == 2:
        return f"{fmt(value)} [{fmt(interval[0])}, {fmt(interval[1])}]"
    return fmt(value)


def _metrics_section(runs: list[RunResults]) -> Section:
    header = ["rung", "preference_accuracy", "mean_margin", "ties"]
    rows, html_rows = [], []
    for run in runs:
        values = run.metrics.get("metrics", {})
        interval = (run.metrics.get("intervals") or {}).get("preference_accuracy")
        row = [run.name, _interval(values.get("preference_accuracy"), interval), fmt(values.get("mean_margin")),
               str(run.metrics.get("ties", ""))]
        rows.append(row)
        html_rows.append("<tr>" + "".join(cell(c) for c in row) + "</tr>")
    note = (f"Held-out pairs ({runs[0].metrics.get('n', '?')}): the share whose chosen response the rung scores "
            "above the rejected one (a tie counts as wrong), with its 95% bootstrap interval. The margin is "
            "score(chosen) - score(rejected) on the rung's own scale (log-probability, implicit reward or reward).")
    html = f'<p class="note">{esc(note)}</p>' + table("preference-metrics", [(h, i > 0) for i, h in
                                                                             enumerate(header)], html_rows)
    return Section("preference-metrics", "Preference accuracy", note + "\n\n" + md_table(header, rows), html)


def _hardest_section(run: RunResults) -> Section:
    records = sorted(run.records or [], key=lambda r: float(r["score_chosen"]) - float(r["score_rejected"]))
    header = ["id", "prompt", "chosen", "rejected", "score chosen", "score rejected"]
    rows = [[str(r["id"]), clip(str(r["prompt"]), 100), clip(r["chosen"], 80), clip(r["rejected"], 80),
             fmt(r["score_chosen"]), fmt(r["score_rejected"])] for r in records[:HARDEST]]
    note = f"{run.name}: the pairs it prefers the rejected response in most strongly (lowest margin first)."
    html_rows = ["<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows]
    html = f'<p class="note">{esc(note)}</p>' + table("preference-hardest", [(h, False) for h in header], html_rows,
                                                      False)
    return Section("preference-hardest", "Hardest pairs", note + "\n\n" + md_table(header, rows), html)
