"""The report as one self-contained HTML page: inline CSS, inline SVG charts, a small inline sorting script.

Nothing is loaded from the network (a Content-Security-Policy forbids it), so the page opens offline from
``file://``. Every value is HTML-escaped; the SVG comes from matplotlib.
"""

from __future__ import annotations

from importlib import resources

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
from adaptlab.reporting.markup import cell, esc, table
from adaptlab.reporting.recommend import fmt_p, is_usable
from adaptlab.reporting.runs import Run
from adaptlab.reporting.sections import Section

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def asset(name: str) -> str:
    """A file from ``adaptlab/reporting/assets`` (shipped as package data)."""
    return resources.files("adaptlab.reporting").joinpath("assets", name).read_text(encoding="utf-8")


def swatch(report: Report, run: Run) -> str:
    return f'<span class="swatch" style="background:{C.colour(report.colours.get(run.name, 0))}"></span>'


# ------------------------------------------------------------------------------------------------- sections


def header_section(report: Report) -> str:
    direction = "higher is better" if report.higher_is_better else "lower is better"
    n = report.test_n if report.test_n is not None else "unknown"
    ladders = ", ".join(f"{s.ladder} ({s.path})" for s in report.sources)
    return (
        f"<header><h1>{esc(report.title)}</h1><p class=meta>Task <b>{esc(report.task)}</b> · primary metric "
        f"<b>{esc(report.metric)}</b> ({direction}) · test examples: {esc(n)} · model(s): "
        f"{esc(', '.join(report.models()) or '-')} · {len(report.runs)} run(s) from {esc(ladders)}</p></header>"
    )


def recommendation_section(report: Report) -> str:
    rec = report.recommendation
    rule = f'<p class="rule">Rule: {esc(rec.rule)}</p>'
    if not rec.choice:
        body = f'<p class="choice">No recommendation.</p><p>{esc(rec.reason)}</p>'
        return f'<section id="recommendation" class="recommendation none">{body}{rule}</section>'
    body = f'<p class="choice">Ship <code>{esc(rec.choice)}</code></p><p>{esc(rec.reason)}</p>'
    if rec.runner_up:
        body += f"<p>Runner-up: <code>{esc(rec.runner_up)}</code>. {esc(rec.runner_up_reason)}</p>"
    return f'<section id="recommendation" class="recommendation">{body}{rule}</section>'


def leaderboard_section(report: Report) -> str:
    header = [("#", True), ("rung", False), ("method", False), (f"{report.metric} [95% CI]", True),
              ("vs best: test", False), ("p", True), ("trainable params", True), ("train s", True),
              ("peak MB", True), ("p50 ms", True), ("size on disk", True)]
    if report.has_forgetting:
        header.append(("forgetting", True))
    rows = []
    for i, r in enumerate(report.runs, 1):
        name = swatch(report, r) + esc(r.name)
        method = r.metrics.get("method") or "-"
        if not is_usable(r.entry()):
            cells = [cell(i, i, "num"), cell(name, r.name, raw=True), cell(method),
                     cell(f"failed: {r.failure}", ""), cell("-", ""), cell("-", "", "num"),
                     *[cell("-", "", "num") for _ in range(5)]]
            cls = "failed"
        else:
            test, p = significance_text(report, r)
            pv = (report.tests.get(r.name) or {}).get("p_value")
            p_cls = "num" if pv is None else f"num {'sig-yes' if pv < 0.05 else 'sig-no'}"
            c = r.cost
            costs = cost_cells(r)
            cells = [
                cell(i, i, "num"), cell(name, r.name, raw=True), cell(method),
                cell(fmt_interval(r) + (f" ⚠ {r.flag}" if r.flag else ""), r.value, "num"),
                cell(test), cell(p, pv if pv is not None else "", p_cls),
                cell(costs[0], c.get("trainable_params"), "num"), cell(costs[1], c.get("train_seconds"), "num"),
                cell(costs[2], c.get("peak_memory_mb"), "num"), cell(costs[3], c.get("latency_ms_p50"), "num"),
                cell(costs[4], c.get("size_on_disk_bytes"), "num"),
            ]
            cls = "recommended" if r.name == report.recommendation.choice else ""
        if report.has_forgetting:
            f = r.metrics.get("forgetting")
            delta = f.get("delta") if isinstance(f, dict) else f
            cells.append(cell(forgetting_text(f), delta if isinstance(delta, (int, float)) else "", "num"))
        rows.append(f'<tr class="{cls}" data-run="{esc(r.name)}">{"".join(cells)}</tr>')
    note = (
        '<p class="note">Click a column header to sort. <b>p</b>: paired test of the rung against the best on the '
        "same test examples (matched by id): McNemar's test on per-example correctness for classification, a "
        "paired bootstrap otherwise; red = significantly different (p &lt; 0.05). Cost: training wall time, peak "
        "memory while training, p50 latency predicting one example at a time, size of the saved weights.</p>"
    )
    board = table("leaderboard", header, rows)
    return f'<section id="leaderboard-section"><h2>Leaderboard</h2>{board}{note}</section>'


def figure(chart: C.Chart, wide: bool = False) -> str:
    return (f'<figure class="chart{" wide" if wide else ""}" id="{esc(chart.id)}" data-chart="{esc(chart.id)}">'
            f"{chart.svg}<figcaption>{esc(chart.caption)}</figcaption></figure>")


def charts_section(report: Report) -> str:
    if not report.charts:
        return ('<section id="cost"><h2>Quality against cost</h2><p class="note">No finished rung recorded its cost.'
                "</p></section>")
    figs = "".join(figure(c) for c in report.charts)
    return f'<section id="cost"><h2>Quality against cost</h2><div class="charts">{figs}</div></section>'


def curves_section(report: Report) -> str:
    if report.curves is None:
        return ('<section id="curves"><h2>Learning curves</h2><p class="note">No rung logged a loss history (rungs '
                "that prompt, embed or fit a probe do not train by steps).</p></section>")
    return f'<section id="curves"><h2>Learning curves</h2>{figure(report.curves, wide=True)}</section>'


def task_section(section: Section) -> str:
    """One of the task's own sections (Task.report_sections)."""
    return f'<section id="{esc(section.id)}"><h2>{esc(section.title)}</h2>{section.html}</section>'


def diagnosis_section(report: Report) -> str:
    baselines = "".join(f"<li>Baseline {esc(t)}</li>" for t in baseline_texts(report))
    flagged = diagnosed_runs(report)
    if not flagged:
        return f'<section id="baselines"><ul>{baselines}</ul></section>' if baselines else ""
    items = "".join(f"<li><code>{esc(r.name)}</code> <strong>{esc(r.flag)}</strong>: {esc(why)}</li>"
                    for r, why in flagged)
    return ('<section id="diagnosis"><h2>Rungs that learned nothing (or are doubted)</h2><p class="note">A '
            "degenerate rung is excluded from the recommendation: its score says the rung was not trained enough, "
            f"not that the method is worse.</p><ul>{baselines}{items}</ul></section>")


def failed_section(report: Report) -> str:
    failed = [r for r in report.runs if not is_usable(r.entry())]
    if not failed:
        return ""
    items = "".join(f"<li><code>{esc(r.name)}</code>: {esc(r.failure)} "
                    f"(<code>{esc(r.path / 'error.log')}</code>)</li>" for r in failed)
    return f'<section id="failed"><h2>Failed rungs</h2><ul>{items}</ul></section>'


def significance_section(report: Report) -> str:
    rows = []
    for r in report.ok_runs:
        if r.name == report.recommendation.best:
            continue
        t = report.tests.get(r.name) or {}
        p = t.get("p_value")
        rows.append(
            f"<tr>{cell(r.name)}{cell(t.get('method') or 'none')}{cell(t.get('n'), t.get('n') or 0, 'num')}"
            f"{cell(fmt_p(p) if p is not None else '-', p if p is not None else '', 'num')}"
            f"{cell(t.get('detail'))}</tr>"
        )
    if not rows:
        return ""
    best = report.recommendation.best
    tbl = table("significance", [("rung", False), ("test", False), ("n", True), ("p", True), ("detail", False)], rows)
    return f'<section id="significance"><h2>Significance against the best ({esc(best)})</h2>{tbl}</section>'


def provenance_section(report: Report) -> str:
    header = [("run", False), *[(label, label == "seed") for _, label in PROVENANCE_KEYS]]
    rows = ["<tr>" + cell(r.name) + "".join(cell(v) for v in provenance_cells(r)) + "</tr>" for r in report.runs]
    return f'<section id="provenance"><h2>Provenance</h2>{table("provenance-table", header, rows)}</section>'


def warnings_section(report: Report) -> str:
    if not report.warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in report.warnings)
    return f'<section id="warnings"><h2>Warnings</h2><ul class="warnings">{items}</ul></section>'


def render_html(report: Report) -> str:
    """The whole page."""
    details = "".join(task_section(s) for s in report.sections)
    body = "".join([
        header_section(report), recommendation_section(report), leaderboard_section(report),
        significance_section(report), charts_section(report), curves_section(report), details,
        diagnosis_section(report), failed_section(report), provenance_section(report), warnings_section(report),
    ])
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(report.title)} · adaptlab report</title><style>{asset('report.css')}</style></head>"
        f"<body><main>{body}</main><script>{asset('report.js')}</script></body></html>\n"
    )
