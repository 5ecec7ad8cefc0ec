"""The report as Markdown (report.md): recommendation, leaderboard, Pareto fronts, the task's own sections,
diagnoses, failures and provenance. Charts are only in the HTML page.
"""

from __future__ import annotations

from adaptlab.reporting import charts as C
from adaptlab.reporting.content import (
    PROVENANCE_KEYS,
    Report,
    baseline_texts,
    cost_cells,
    diagnosed_runs,
    fmt_interval,
    forgetting_text,
    provenance_cells,
    significance_text,
)
from adaptlab.reporting.markup import md_table
from adaptlab.reporting.recommend import is_usable


def leaderboard_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["#", "rung", "method", f"{report.metric} [95% CI]", "vs best: test", "p", "trainable", "train s",
              "peak MB", "p50 ms", "size"]
    if report.has_forgetting:
        header.append("forgetting")
    rows = []
    for i, r in enumerate(report.runs, 1):
        if not is_usable(r.entry()):
            row = [str(i), r.name, str(r.metrics.get("method") or "-"), f"failed: {r.failure}",
                   "-", "-", *["-"] * 5]
        else:
            test, p = significance_text(report, r)
            value = fmt_interval(r) + (f" ⚠ {r.flag}" if r.flag else "")
            row = [str(i), r.name, str(r.metrics.get("method") or "-"), value, test, p, *cost_cells(r)]
        if report.has_forgetting:
            row.append(forgetting_text(r.metrics.get("forgetting")))
        rows.append(row)
    return header, rows


def render_markdown(report: Report) -> str:
    """The whole report.md."""
    rec = report.recommendation
    direction = "higher is better" if report.higher_is_better else "lower is better"
    out = [f"# {report.title}", ""]
    out.append(
        f"Task **{report.task}**, primary metric **{report.metric}** ({direction}), test examples: "
        f"{report.test_n if report.test_n is not None else 'unknown'}; model(s): {', '.join(report.models()) or '-'}."
    )
    out += ["", "## Recommendation", ""]
    if rec.choice:
        out.append(f"**Ship `{rec.choice}`.** {rec.reason}")
        if rec.runner_up:
            out += ["", f"Runner-up: `{rec.runner_up}`. {rec.runner_up_reason}"]
    else:
        out.append(f"No recommendation: {rec.reason}")
    out += ["", f"_Rule: {rec.rule}_", "", "## Leaderboard", ""]
    header, rows = leaderboard_rows(report)
    out.append(md_table(header, rows))
    out += [f"Baseline: {line}" for line in baseline_texts(report)]
    out += ["", "Significance: each rung against the best on the same test examples (paired by id): McNemar's test "
            "on per-example correctness for classification, a paired bootstrap otherwise.", ""]
    out += _pareto(report)
    for section in report.sections:
        out += [f"## {section.title}", "", section.markdown, ""]
    out += _diagnoses(report)
    out += ["## Provenance", "", md_table(["run", *[label for _, label in PROVENANCE_KEYS]],
                                            [[r.name, *provenance_cells(r)] for r in report.runs]), ""]
    if report.warnings:
        out += ["## Warnings", "", *[f"- {w}" for w in report.warnings], ""]
    return "\n".join(out)


def _pareto(report: Report) -> list[str]:
    """The Pareto fronts, per cost, in words (the charts are in report.html)."""
    if not report.ok_runs:
        return []
    out = ["## Quality against cost", "", "Pareto front (no other rung is both cheaper and better), per cost:", ""]
    for name, label, _ in C.COST_AXES:
        if report.pareto.get(name):
            out.append(f"- {label}: {', '.join(report.pareto[name])}")
    return out + ["", "Charts (quality against each cost, learning curves) are in report.html.", ""]


def _diagnoses(report: Report) -> list[str]:
    """Rungs that learned nothing (or are doubted), and failed rungs with their error log."""
    out: list[str] = []
    flagged = diagnosed_runs(report)
    if flagged:
        out += ["## Rungs that learned nothing (or are doubted)", ""]
        out += [f"- `{r.name}` ({r.flag}): {why}" for r, why in flagged]
        out.append("")
    failed = [r for r in report.runs if not is_usable(r.entry())]
    if failed:
        out += ["## Failed rungs", ""]
        out += [f"- `{r.name}`: {r.failure} ({r.path / 'error.log'})" for r in failed]
        out.append("")
    return out
