"""The terminal leaderboard: rungs ranked by the primary metric, with their cost beside them."""

from __future__ import annotations

from rich.table import Table


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


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def leaderboard_table(board: dict) -> Table:
    primary = board["primary_metric"]
    table = Table(title=f"{board['ladder']}: {board['task']} on {board['model']} (test n={board['split']['test']})")
    for col, justify in [
        ("#", "right"), ("rung", "left"), (f"{primary} [95% CI]", "left"), ("accuracy", "right"),
        ("trainable", "right"), ("train s", "right"), ("samples/s", "right"), ("peak MB", "right"),
        ("size", "right"), ("p50 ms", "right"),
    ]:
        table.add_column(col, justify=justify)
    for i, e in enumerate(board["rungs"], 1):
        if e["status"] != "ok":
            table.add_row(str(i), e["rung"], f"[red]failed[/red]: {e.get('error') or ''}"[:80], *["-"] * 7)
            continue
        c, lo_hi = e["cost"], e.get("interval") or [None, None]
        table.add_row(
            str(i),
            e["rung"],
            f"{fmt(e['value'])} [{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]",
            fmt(e["metrics"].get("accuracy")),
            f"{human_count(c.get('trainable_params'))} ({c.get('trainable_pct', 0):.2g}%)",
            fmt(c.get("train_seconds"), 1),
            fmt(c.get("train_samples_per_second"), 0),
            fmt(c.get("peak_memory_mb"), 0),
            human_bytes(c.get("size_on_disk_bytes")),
            fmt(c.get("latency_ms_p50"), 1),
        )
    return table
