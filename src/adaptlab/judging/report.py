"""The report's "Judges" section: every rung's judge metrics with their intervals, next to ROUGE-L, BLEU, the
reference perplexity and the forgetting perplexity, with what each judge compares against and how far to trust it.
"""

from __future__ import annotations

from typing import Any

from adaptlab.judging.llm_judge import WEAK_JUDGE_NOTE
from adaptlab.judging.settings import METRICS
from adaptlab.reporting.markup import cell, esc, fmt, md_table, table
from adaptlab.reporting.sections import RunResults, Section

#: task metrics shown beside the judges' (when a rung has them)
BESIDE = ("rougeL", "bleu", "perplexity")


def with_interval(metrics: dict, name: str) -> str:
    value = (metrics.get("metrics") or {}).get(name)
    iv = (metrics.get("intervals") or {}).get(name)
    if isinstance(iv, list) and len(iv) == 2:
        return f"{fmt(value)} [{fmt(iv[0])}, {fmt(iv[1])}]"
    return fmt(value)


def forgetting_ppl(metrics: dict) -> str:
    f = (metrics.get("metrics") or {}).get("forgetting")
    return fmt(f.get("adapted_ppl")) if isinstance(f, dict) else "-"


def kl_to_base(metrics: dict) -> str:
    """A rung's KL to the base (grpo: ``kl_to_base``, per sampled completion) with its interval, or "-"."""
    kl = (metrics.get("metrics") or {}).get("kl_to_base")
    if not isinstance(kl, dict):
        return "-"
    lo, hi = kl.get("interval") or (None, None)
    return f"{fmt(kl.get('per_completion'))} [{fmt(lo)}, {fmt(hi)}]"


def notes(runs: list[RunResults]) -> list[str]:
    """What the judges compared against and how far to trust them, from the first rung that records each."""
    found: dict[str, dict] = {}
    for run in runs:
        for name, detail in (run.metrics.get("judges") or {}).items():
            found.setdefault(name, detail)
    out = []
    if "reward" in found:
        out.append(f"Reward: mean reward of the rung's test outputs, and its win rate against rung "
                   f"'{found['reward'].get('against')}' on the same inputs (a tie counts half).")
    if "llm_judge" in found:
        out.append(f"LLM judge: pairwise against rung '{found['llm_judge'].get('against')}', both orders; "
                   f"{WEAK_JUDGE_NOTE}")
    if "mmlu" in found:
        out.append(f"MMLU: {found['mmlu'].get('n', '?')} questions through lm-eval (0-shot, chance 0.25), a "
                   "forgetting check beside the Hamlet perplexity: compare each rung with the base rung.")
    if any(kl_to_base(r.metrics) != "-" for r in runs):
        out.append("KL to base: KL(rung || base model) in nats per completion, a Monte-Carlo estimate over "
                   "completions the rung samples (temperature 1) for test inputs; how far reinforcement learning "
                   "moved the model to earn its reward.")
    return out + ["Intervals: 95% bootstrap over test examples (questions for MMLU)."]


def judges_sections(runs: list[RunResults]) -> list[Section]:
    """The judges' table, or nothing when no rung was judged."""
    judged = [m for m in METRICS if any(m in (r.metrics.get("metrics") or {}) for r in runs)]
    if not judged:
        return []
    beside = [m for m in BESIDE if any(m in (r.metrics.get("metrics") or {}) for r in runs)]
    kl = ["KL to base"] if any(kl_to_base(r.metrics) != "-" for r in runs) else []
    header = ["rung", *beside, *judged, *kl, "forgetting ppl"]
    rows: list[list[Any]] = [[r.name, *[fmt((r.metrics.get("metrics") or {}).get(m)) for m in beside],
                              *[with_interval(r.metrics, m) for m in judged],
                              *([kl_to_base(r.metrics)] if kl else []), forgetting_ppl(r.metrics)]
                             for r in runs]
    text = notes(runs)
    html_rows = ["<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows]
    html = "".join(f'<p class="note">{esc(t)}</p>' for t in text) + table(
        "judges", [(h, i > 0) for i, h in enumerate(header)], html_rows)
    return [Section("judges", "Judges", "\n\n".join(text) + "\n\n" + md_table(header, rows), html)]
