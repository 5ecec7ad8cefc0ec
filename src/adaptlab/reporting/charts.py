"""Charts for the report, drawn with matplotlib (Agg backend) and inlined as SVG.

Each chart is a :class:`Chart`: an id, a title, a caption and the ``<svg>`` markup (no XML prologue), so the HTML
page needs no image files and no JavaScript to show them. Text stays text (``svg.fonttype = none``) and ids are
salted per chart, so several SVGs on one page never clash.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from adaptlab.reporting.recommend import pareto_front  # noqa: E402

COST_AXES = (
    ("trainable_params", "trainable parameters", "count"),
    ("train_seconds", "training time (s)", "seconds"),
    ("peak_memory_mb", "peak memory (MB)", "mb"),
    ("latency_ms_p50", "p50 latency (ms, one example)", "ms"),
    ("size_on_disk_bytes", "size on disk", "bytes"),
)
PALETTE = plt.get_cmap("tab10").colors
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@dataclass(frozen=True)
class Point:
    """One rung in the quality-vs-cost charts."""

    name: str
    value: float
    interval: tuple[float, float] | None
    cost: dict
    color: int = 0
    group: int = 0


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    caption: str
    svg: str


def colour(i: int) -> str:
    r, g, b = PALETTE[i % len(PALETTE)][:3]
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def to_svg(fig: plt.Figure, salt: str) -> str:
    """The figure as inline ``<svg>`` markup; the figure is closed."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    start = text.find("<svg")
    svg = text[start:]
    # scale with the page: keep the viewBox, drop the fixed size
    return re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r'<svg\1 class="chart-svg"', svg, count=1)


def _format_cost(kind: str):
    def fmt(x: float, _pos: object = None) -> str:
        if kind == "bytes":
            for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
                if abs(x) >= size:
                    return f"{x / size:.3g} {unit}"
            return f"{x:.3g} B"
        if kind == "count":
            for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
                if abs(x) >= size:
                    return f"{x / size:.3g}{unit}"
        return f"{x:.3g}"

    return FuncFormatter(fmt)


def _scale(ax: plt.Axes, values: Sequence[float]) -> None:
    """Log scale when costs span orders of magnitude (symlog when some are zero), else linear."""
    positive = [v for v in values if v > 0]
    if not positive or max(positive) / min(positive) < 20:
        return
    if len(positive) == len(values):
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=10 ** math.floor(math.log10(min(positive))))


def quality_cost_chart(
    points: Sequence[Point], cost_name: str, cost_label: str, kind: str, metric: str, higher_is_better: bool
) -> Chart | None:
    """Quality (with its interval) against one cost, the Pareto front drawn as a step line; None if no data."""
    usable = [p for p in points if isinstance(p.cost.get(cost_name), (int, float))]
    if not usable:
        return None
    front = set(pareto_front([(p.name, float(p.cost[cost_name]), p.value) for p in usable], higher_is_better))
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for p in usable:
        x = float(p.cost[cost_name])
        err = None
        if p.interval and None not in p.interval:
            err = [[max(0.0, p.value - p.interval[0])], [max(0.0, p.interval[1] - p.value)]]
        ax.errorbar([x], [p.value], yerr=err, fmt=MARKERS[p.group % len(MARKERS)], color=colour(p.color),
                    ecolor=colour(p.color), elinewidth=1, capsize=3, markersize=7, zorder=3,
                    markeredgecolor="black" if p.name in front else colour(p.color), markeredgewidth=1.4)
        ax.annotate(p.name, (x, p.value), textcoords="offset points", xytext=(6, 5), fontsize=8)
    ordered = sorted((float(p.cost[cost_name]), p.value) for p in usable if p.name in front)
    if len(ordered) > 1:
        xs, ys = zip(*ordered, strict=True)
        ax.step(xs, ys, where="post", color="black", linestyle="--", linewidth=1, zorder=2, label="Pareto front")
        ax.legend(loc="lower right" if higher_is_better else "upper right", fontsize=8, frameon=False)
    _scale(ax, [float(p.cost[cost_name]) for p in usable])
    if ax.get_xscale() == "linear":
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(_format_cost(kind))
    ax.set_xlabel(cost_label)
    ax.set_ylabel(metric + ("" if higher_is_better else " (lower is better)"))
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15, y=0.12)
    title = f"{metric} vs {cost_label}"
    ax.set_title(title, fontsize=10)
    missing = [p.name for p in points if p not in usable]
    caption = (
        f"Each point is a rung, with its 95% interval. Outlined points form the Pareto front (no other rung is both "
        f"cheaper and better): {', '.join(n for n in sorted(front))}."
        + (f" Not recorded for: {', '.join(missing)}." if missing else "")
    )
    return Chart(f"quality-vs-{cost_name}", title, caption, to_svg(fig, f"q-{cost_name}"))


def quality_cost_charts(points: Sequence[Point], metric: str, higher_is_better: bool) -> list[Chart]:
    """One chart per cost axis in :data:`COST_AXES` that has data."""
    charts = []
    for name, label, kind in COST_AXES:
        chart = quality_cost_chart(points, name, label, kind, metric, higher_is_better)
        if chart is not None:
            charts.append(chart)
    return charts


def _loss_point(h: object, key: str) -> bool:
    """A history entry with a finite ``key`` (loss or eval_loss) at a numeric step."""
    if not isinstance(h, dict):
        return False
    value, step = h.get(key), h.get("step")
    return isinstance(value, (int, float)) and isinstance(step, (int, float)) and math.isfinite(value)


def learning_curves(histories: Sequence[tuple[str, int, list[dict]]]) -> Chart | None:
    """Training loss (solid) and validation loss (dashed, markers) per step, one colour per rung.

    ``histories`` holds ``(rung name, colour index, history)`` with history entries carrying ``step`` and
    ``loss`` and/or ``eval_loss``; None when no rung logged any loss.
    """
    drawn = False
    fig, ax = plt.subplots(figsize=(10.0, 3.6))
    for name, color, history in histories:
        for key, style, label in (("loss", "-", "train"), ("eval_loss", "--", "validation")):
            pts = sorted((float(h["step"]), float(h[key])) for h in history if _loss_point(h, key))
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, style, color=colour(color), marker="o" if key == "eval_loss" else None, markersize=4,
                    linewidth=1.5, label=f"{name} ({label})")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("learning curves", fontsize=10)
    caption = (
        "Training loss (solid) and validation loss (dashed) per optimizer step, for every rung that trains by steps."
    )
    return Chart("learning-curves", "learning curves", caption, to_svg(fig, "learning-curves"))


def validation_curves(curves: Sequence[tuple[str, int, list[dict], int | None]], metric: str,
                      higher_is_better: bool) -> Chart | None:
    """The task's metric on the validation split at each evaluation during training, one line per rung, the
    evaluation whose weights the rung kept ringed.

    ``curves`` holds ``(rung name, colour index, history, kept step or None)``, the history entries carrying
    ``step`` and ``eval_<metric>``; None when no rung recorded one.
    """
    key, drawn = f"eval_{metric}", False
    fig, ax = plt.subplots(figsize=(10.0, 3.6))
    for name, color, history, kept in curves:
        pts = sorted((float(h["step"]), float(h[key])) for h in history if _loss_point(h, key))
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, "-", color=colour(color), marker="o", markersize=4, linewidth=1.5, label=name)
        best = [(x, y) for x, y in pts if kept is not None and x == kept]
        if best:
            ax.plot(*best[0], "o", markersize=12, markerfacecolor="none", markeredgecolor=colour(color),
                    markeredgewidth=2, zorder=4)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"validation {metric}" + ("" if higher_is_better else " (lower is better)"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"validation {metric} during training", fontsize=10)
    caption = (
        f"The task's {metric} on the validation split at each evaluation during training, per rung. A ring marks "
        "the evaluation whose weights the rung kept (select_best); none when it kept final weights that were not "
        "evaluated."
    )
    return Chart("validation-curves", f"validation {metric}", caption, to_svg(fig, "validation-curves"))
