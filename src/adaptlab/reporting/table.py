"""The terminal leaderboard: rungs ranked by the primary metric, with their cost beside them."""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.table import Table

#: The width of what is written to a file or a pipe (a log, CI) rather than a terminal: rich's 80 columns would cut
#: the leaderboard's numbers to "0.8…".
PIPED_WIDTH = 160


def console_for(stderr: bool = False) -> Console:
    """Rich's console for stdout (or stderr): a terminal's own width; :data:`PIPED_WIDTH` when the output goes to a
    file or a pipe and COLUMNS does not say otherwise."""
    found = Console(stderr=stderr)
    return found if found.is_terminal or os.environ.get("COLUMNS") else Console(stderr=stderr, width=PIPED_WIDTH)


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def percent(x: float | None) -> str:
    """A share in percent to two significant figures, never in scientific notation: 100%, 16%, 0.0034%."""
    import numpy as np  # here: the CLI imports this module at start

    if not isinstance(x, (int, float)):
        return "-"
    return f"{np.format_float_positional(x, precision=2, unique=False, fractional=False, trim='-')}%"


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def leaderboard_table(board: dict) -> Table:
    primary = board["primary_metric"]
    table = Table(title=f"{board['ladder']}: {board['task']} on {board['model']} (test n={board['split']['test']})")
    # accuracy beside the primary metric where the task reports one (classification), not an empty column otherwise
    accuracy = any("accuracy" in e.get("metrics", {}) for e in board["rungs"]) and primary != "accuracy"
    for col, justify in [
        ("#", "right"), ("rung", "left"), (f"{primary} [95% CI]", "left"), *([("accuracy", "right")] * accuracy),
        ("trainable", "right"), ("train s", "right"), ("samples/s", "right"), ("peak MB", "right"),
        ("size", "right"), ("p50 ms", "right"),
    ]:
        table.add_column(col, justify=justify)
    for i, e in enumerate(board["rungs"], 1):
        if e["status"] != "ok":
            error = " ".join(str(e.get("error") or "").split())
            short = error if len(error) <= 70 else error[:69] + "…"  # the whole reason is printed below the table
            table.add_row(str(i), e["rung"], f"[red]failed[/red]: {escape(short)}", *["-"] * (6 + accuracy))
            continue
        c, lo_hi = e["cost"], e.get("interval") or [None, None]
        table.add_row(
            str(i),
            e["rung"],
            f"{fmt(e['value'])} [{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]{_seeds_mark(e)}{flag_mark(e)}",
            *[fmt(e["metrics"].get("accuracy"))] * accuracy,
            f"{human_count(c.get('trainable_params'))} ({percent(c.get('trainable_pct'))})",
            fmt(c.get("train_seconds"), 1),
            fmt(c.get("train_samples_per_second"), 0),
            fmt(c.get("peak_memory_mb"), 0),
            human_bytes(c.get("size_on_disk_bytes")),
            fmt(c.get("latency_ms_p50"), 1),
        )
    return table


def _seeds_mark(entry: dict) -> str:
    """With several training seeds: their mean and standard deviation after the shipped seed's score."""
    seeds = entry.get("seeds") or {}
    return "" if seeds.get("mean") is None else f" seeds {seeds['mean']:.3f}±{seeds.get('std') or 0:.3f}"


def flag_mark(entry: dict) -> str:
    """A mark after the score of a rung that learned nothing (degenerate) or is doubted (see diagnosis_lines)."""
    d = entry.get("diagnosis") or {}
    return " [bold yellow]⚠ degenerate[/bold yellow]" if d.get("degenerate") else " [yellow]⚠[/yellow]" if (
        d.get("findings")) else ""


def diagnosis_lines(board: dict) -> list[str]:
    """Below the table: the task's trivial baselines, then each flagged rung's diagnosis and what to try (rich
    markup)."""
    from adaptlab.evaluation.diagnosis import summary

    lines = []
    for name, b in (board.get("baselines") or {}).items():
        lo, hi = b.get("interval") or (None, None)
        lines.append(f"baseline {escape(name)} ({escape(b.get('note', ''))}): {board['primary_metric']} "
                     f"{fmt(b.get('value'))} [{fmt(lo)}, {fmt(hi)}]")
    for e in board["rungs"]:
        d = e.get("diagnosis") or {}
        if e["status"] == "ok" and d.get("findings"):
            kind = "learned nothing (excluded from the recommendation)" if d.get("degenerate") else "doubted"
            lines.append(f"[yellow]⚠ {escape(e['rung'])} {kind}:[/yellow] {escape(summary(d))}")
    return lines
