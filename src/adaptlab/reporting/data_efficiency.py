"""The report's "How many labels do I need?": each rung's quality against the labelled examples it trained on
(``train_sizes:``), and from which size fine-tuning beats prompting.

It reads what the pipeline wrote into each rung's metrics.json (``train_sizes``, see
:func:`adaptlab.pipeline.run_configured`); a report of runs without it has no such section. The verdict is
:func:`adaptlab.evaluation.data_efficiency.beats_prompting`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from adaptlab.evaluation.data_efficiency import RULE, beats_prompting, x_value
from adaptlab.reporting import charts as C
from adaptlab.reporting.markup import cell, esc, fmt, md_table, table
from adaptlab.reporting.runs import Run
from adaptlab.reporting.sections import Section

TITLE = "How many labels do I need?"


def _unit_words(curve: dict) -> str:
    return "examples per class" if curve.get("unit") == "per_class" else "training examples"


def size_label(p: dict, curve: dict) -> str:
    """A size as the axis and the table name it: ``8``, ``all (≈57 per class)`` (the mean class size) or
    ``all (400)``."""
    if p["size"] != "all":
        return str(p["size"])
    if curve.get("classes"):
        return f"all (≈{x_value(p, curve['classes']):.0f} per class)"
    return f"all ({p['n_train']})"


def verdict(trained: list[Run], flat: list[Run], metric: str, higher_is_better: bool) -> str:
    """The sentence answering "from how many labelled examples does fine-tuning beat prompting?", from the data."""
    if not trained:
        return "No rung that trains is on the curve, so there is nothing to compare with prompting."
    references = {r.name: (r.result.train_sizes or {}).get("reference", {}).get("value") for r in flat}
    if not any(isinstance(v, (int, float)) for v in references.values()):
        return ("No prompting rung (a rung that doesn't train) is on the curve, so the curve can't say when "
                "fine-tuning beats prompting; add one (e.g. zero_shot_prompt or embedding_zero_shot) to the ladder.")
    curves = {r.name: r.result.train_sizes or {} for r in trained}
    found = beats_prompting(curves, references, higher_is_better)
    best = max if higher_is_better else min
    ref = best((n for n, v in references.items() if isinstance(v, (int, float))), key=lambda n: references[n])
    against = f"the best prompting rung, {ref} ({metric} {fmt(references[ref])})"
    if found is None:
        sizes = ", ".join(dict.fromkeys(size_label(p, c) for c in curves.values() for p in c.get("points") or []))
        return (f"Fine-tuning does not beat prompting within the sizes tried ({sizes}): no trained rung beats "
                f"{against}.")
    curve = curves[found["rung"]]
    where = (f"from {found['size']} {_unit_words(curve)}" if found["size"] != "all"
             else "only with the whole training split")
    bound = "lowest" if higher_is_better else "highest"
    return (f"Fine-tuning beats prompting {where}: {found['rung']} beats {against} on every seed at that size and "
            f"every larger one ({bound} 95% bound {fmt(found['bound'])}).")


def _cell_text(p: dict) -> str:
    if p.get("mean") is None:
        return "failed"
    spread = f", {fmt(p['min'])}-{fmt(p['max'])}" if p.get("n", 0) > 1 else ""
    failed = f", {len(p['failed'])} failed" if p.get("failed") else ""
    return f"{fmt(p['mean'])} (n={p.get('n')}{spread}{failed})"


def _rows(trained: list[Run], flat: list[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per rung, one column per size (mean over seeds, n, min-max); flat rungs span every size."""
    columns: dict[str, float] = {}
    for r in trained:
        curve = r.result.train_sizes or {}
        for p in curve.get("points") or []:
            columns.setdefault(size_label(p, curve), x_value(p, curve.get("classes")))
    labels = sorted(columns, key=lambda k: columns[k])
    rows = []
    for r in trained:
        curve = r.result.train_sizes or {}
        by = {size_label(p, curve): _cell_text(p) for p in curve.get("points") or []}
        rows.append([r.name, "trains", *[by.get(k, "-") for k in labels]])
    for r in flat:
        value = ((r.result.train_sizes or {}).get("reference") or {}).get("value")
        rows.append([r.name, "prompting (runs once)", *[fmt(value)] * len(labels)])
    return ["rung", "kind", *labels], rows


def size_chart(trained: list[Run], flat: list[Run], colours: dict[str, int], metric: str,
               higher_is_better: bool) -> C.Chart | None:
    """Quality against labelled examples (log axis): per trained rung the mean over seeds, bars for the range
    over seeds and a band for the outermost 95% bounds; a dashed line per prompting rung."""
    fig, ax = plt.subplots(figsize=(10.0, 3.8))
    ticks: dict[float, str] = {}
    for r in trained:
        curve = r.result.train_sizes or {}
        pts = [p for p in curve.get("points") or [] if p.get("mean") is not None]
        if not pts:
            continue
        xs = [x_value(p, curve.get("classes")) for p in pts]
        ticks.update({x: size_label(p, curve) for x, p in zip(xs, pts, strict=True)})
        colour = C.colour(colours.get(r.name, 0))
        means = [p["mean"] for p in pts]
        spread = [[m - p["min"] for m, p in zip(means, pts, strict=True)],
                  [p["max"] - m for m, p in zip(means, pts, strict=True)]]
        ax.errorbar(xs, means, yerr=spread, fmt="-o", color=colour, capsize=3, markersize=5, linewidth=1.5,
                    label=r.name)
        low = [p["low"] if p.get("low") is not None else p["min"] for p in pts]
        high = [p["high"] if p.get("high") is not None else p["max"] for p in pts]
        ax.fill_between(xs, low, high, color=colour, alpha=0.15, linewidth=0)
    if not ticks:
        plt.close(fig)
        return None
    for r in flat:
        value = ((r.result.train_sizes or {}).get("reference") or {}).get("value")
        if isinstance(value, (int, float)):
            ax.axhline(value, linestyle="--", linewidth=1.3, color=C.colour(colours.get(r.name, 0)),
                       label=f"{r.name} (prompting)")
    unit = _unit_words(trained[0].result.train_sizes or {})
    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel(f"labelled {unit} (log scale)")
    ax.set_ylabel(metric + ("" if higher_is_better else " (lower is better)"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"{metric} vs labelled {unit}", fontsize=10)
    caption = (f"Test {metric} of each trained rung against the labelled {unit} it trained on: the mean over seeds "
               "(line), the range over seeds (bars) and the outermost 95% interval bounds of the seeds' runs "
               "(band); dashed: rungs that don't train, run once.")
    return C.Chart("train-sizes-chart", f"{metric} vs labelled {unit}", caption, C.to_svg(fig, "train-sizes"))


def data_efficiency_section(runs: list[Run], colours: dict[str, int], metric: str,
                            higher_is_better: bool) -> Section | None:
    """The curve per rung on it: the verdict, the chart (HTML) and the table of values per size."""
    curved = [r for r in runs if r.result.train_sizes and r.result.train_sizes.get("predicts", True)]
    if not curved:
        return None
    trained = [r for r in curved if (r.result.train_sizes or {}).get("trains")]
    flat = [r for r in curved if not (r.result.train_sizes or {}).get("trains")]
    answer = verdict(trained, flat, metric, higher_is_better)
    unit = _unit_words((trained or flat)[0].result.train_sizes or {})
    intro = (f"Each trained rung re-run on nested, seeded subsets of the training split ({unit}; the same "
             f"validation and test split), each size with several seeds. {RULE}")
    header, rows = _rows(trained, flat)
    chart = size_chart(trained, flat, colours, metric, higher_is_better)
    fig = "" if chart is None else (f'<figure class="chart wide" id="{chart.id}" data-chart="{chart.id}">'
                                    f"{chart.svg}<figcaption>{esc(chart.caption)}</figcaption></figure>")
    html_rows = [f"<tr>{''.join(cell(c) for c in row)}</tr>" for row in rows]
    html = (f"<p><b>{esc(answer)}</b></p>{fig}<p>{esc(intro)}</p>"
            + table("train-sizes-table", [(h, h not in ("rung", "kind")) for h in header], html_rows))
    markdown = (f"**{answer}**\n\n{intro}\n\n{md_table(header, rows)}\n\n"
                f"Cells: mean {metric} over seeds (n seeds, min-max). The chart is in report.html.")
    return Section("train-sizes", TITLE, markdown, html)
