"""The report's content, computed once and shown by every view (terminal, Markdown, HTML): the :class:`Report`
record and the texts the Markdown and HTML views share (cells of the leaderboard, provenance, baselines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from adaptlab.reporting import charts as C
from adaptlab.reporting.markup import fmt
from adaptlab.reporting.recommend import Recommendation, fmt_p, is_usable
from adaptlab.reporting.runs import Run, Source, interval
from adaptlab.reporting.sections import Section


@dataclass
class Report:
    """Everything the terminal, Markdown and HTML views show, computed once."""

    title: str
    sources: list[Source]
    runs: list[Run]
    task: str
    metric: str
    higher_is_better: bool
    test_n: int | None
    tests: dict[str, dict]
    recommendation: Recommendation
    charts: list[C.Chart]
    curves: C.Chart | None
    pareto: dict[str, list[str]]
    #: the task's own sections (Task.report_sections); empty for a task this install doesn't know
    sections: list[Section]
    colours: dict[str, int]
    warnings: list[str]

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if is_usable(r.entry())]

    @property
    def has_forgetting(self) -> bool:
        return any(r.metrics.get("forgetting") is not None for r in self.runs)

    def models(self) -> list[str]:
        return sorted({str(r.model) for r in self.runs if r.model})


def fmt_interval(run: Run) -> str:
    """The score with its 95% interval over test examples, and with several training seeds their mean and std."""
    iv = interval(run)
    text = f"{fmt(run.value)} [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else fmt(run.value)
    return text + seeds_text(run.result.seeds)


def seeds_text(seeds: dict | None) -> str:
    """" (seeds: mean 0.812 ± 0.011, n=3)", or "" for a rung run with one seed."""
    if not seeds or seeds.get("mean") is None:
        return ""
    return f" (seeds: mean {fmt(seeds['mean'])} ± {fmt(seeds.get('std'))}, n={seeds.get('n')})"


def forgetting_text(value: Any) -> str:
    """A forgetting entry as one short string: a number is the delta; a dict shows delta and before -> after."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:+.4g}"
    if isinstance(value, dict):
        parts = []
        if isinstance(value.get("delta"), (int, float)):
            parts.append(f"{value['delta']:+.4g}")
        before = value.get("before", value.get("base_ppl"))
        after = value.get("after", value.get("adapted_ppl"))
        if isinstance(before, (int, float)) and isinstance(after, (int, float)):
            parts.append(f"({before:.4g} -> {after:.4g})")
        if "base_ppl" in value and not value.get("metric"):
            parts.append("perplexity")
        if value.get("metric"):
            parts.append(str(value["metric"]))
        return " ".join(parts) or json.dumps(value, sort_keys=True)
    return str(value)


def significance_text(report: Report, run: Run) -> tuple[str, str]:
    """(test, p-value text) of a run against the best, for tables."""
    if run.name == report.recommendation.best:
        return "best", "-"
    t = report.tests.get(run.name)
    if not t:
        return "-", "-"
    if t.get("p_value") is None:
        return f"none ({t.get('detail')})", "-"
    return str(t["method"]), fmt_p(t["p_value"])


def cost_cells(run: Run) -> list[str]:
    from adaptlab.reporting.table import human_bytes, human_count

    c = run.cost
    return [
        human_count(c.get("trainable_params")), fmt(c.get("train_seconds"), 1), fmt(c.get("peak_memory_mb"), 0),
        fmt(c.get("latency_ms_p50"), 1), human_bytes(c.get("size_on_disk_bytes")),
    ]


PROVENANCE_KEYS = (
    ("model", "model"), ("model_sha256", "model sha256"), ("data_sha256", "data sha256"), ("seed", "seed"),
    ("git_revision", "git revision"), ("packages", "versions"), ("python", "python"), ("device", "device"),
    ("created", "created"),
)


def provenance_cells(run: Run) -> list[str]:
    p = run.provenance
    cells = []
    for key, _ in PROVENANCE_KEYS:
        v = p.get(key)
        if key.endswith("sha256") and isinstance(v, str):
            v = v[:12]
        elif key == "packages" and isinstance(v, dict):
            v = ", ".join(f"{k} {v[k]}" for k in ("adaptlab", "torch", "transformers", "peft") if k in v)
        cells.append("-" if v in (None, "") else str(v))
    return cells


def baseline_texts(report: Report) -> list[str]:
    """The task's trivial baselines recorded in each ladder's leaderboard, in words."""
    out = []
    for source in report.sources:
        for name, b in ((source.board or {}).get("baselines") or {}).items():
            lo, hi = b.get("interval") or (None, None)
            where = f"{source.ladder}: " if len(report.sources) > 1 else ""
            out.append(f"{where}{name} ({b.get('note', '')}): {report.metric} {fmt(b.get('value'))} "
                       f"[{fmt(lo)}, {fmt(hi)}]; every trained rung should clear it.")
    return out


def diagnosed_runs(report: Report) -> list[tuple[Run, str]]:
    """Finished rungs with a diagnosis finding, and the finding with its advice in words."""
    from adaptlab.evaluation.diagnosis import summary

    return [(r, summary(r.metrics.get("diagnosis"))) for r in report.runs if r.flag and is_usable(r.entry())]
