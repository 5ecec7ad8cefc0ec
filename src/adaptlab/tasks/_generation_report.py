"""What the report shows for a generation ladder: paired bootstraps on per-example ROUGE / exact match (or on a
corpus metric such as BLEU), and the rungs' outputs side by side on the same test inputs.
"""

from __future__ import annotations

from typing import Any

from adaptlab.reporting.markup import cell, clip, md_table, table
from adaptlab.reporting.sections import RunResults, Section
from adaptlab.reporting.significance import bootstrap_test, corpus_bootstrap_test, no_test

SIDE_BY_SIDE = 12


def per_example_scores(records: list[dict], metric: str) -> list[float] | None:
    """Per-example values of ``metric``, or None when the metric has none (BLEU, chrF, perplexity).

    A record may carry them itself (``{"metrics": {metric: value}}``, as the task's predict writes them);
    otherwise ROUGE and exact match are computed from ``prediction`` and ``reference``.
    """
    from adaptlab.evaluation.metrics import ROUGE_TYPES, normalize_answer, rouge_per_example

    own = [(r.get("metrics") or {}).get(metric) if isinstance(r.get("metrics"), dict) else None for r in records]
    if own and all(isinstance(v, (int, float)) for v in own):
        return [float(v) for v in own]
    preds = [r.get("prediction") for r in records]
    refs = [r.get("reference") for r in records]
    if not all(isinstance(x, str) for x in preds + refs):
        return None
    if metric in ROUGE_TYPES:
        return rouge_per_example(preds, refs)[metric]
    if metric == "exact_match":
        return [float(normalize_answer(p) == normalize_answer(r)) for p, r in zip(preds, refs, strict=True)]
    return None


def paired_test(best: list[dict], other: list[dict], metric: str) -> dict:
    """A paired bootstrap on per-example scores, else on the corpus metric (BLEU, chrF) over resampled examples."""
    from adaptlab.evaluation import metrics as M

    scores_best, scores_other = per_example_scores(best, metric), per_example_scores(other, metric)
    if scores_best is not None and scores_other is not None:
        return bootstrap_test(scores_best, scores_other)
    corpus = {"bleu": M.bleu, "chrf": M.chrf}.get(metric)
    if corpus is None or not all(isinstance(r.get("reference"), str) for r in best):
        return no_test(f"no per-example {metric} to pair")
    refs = [r["reference"] for r in best]
    pa, pb = [str(r.get("prediction")) for r in best], [str(r.get("prediction")) for r in other]

    def stat(idx: Any) -> tuple[float, float]:
        sub = [refs[i] for i in idx]
        return corpus([pa[i] for i in idx], sub), corpus([pb[i] for i in idx], sub)

    return corpus_bootstrap_test(stat, len(best), metric)


def record_input(r: dict) -> str:
    """A record's input as text (whichever input field it has, with its text pair)."""
    for key in ("text", "prompt", "input", "source", "question"):
        if isinstance(r.get(key), str):
            pair = r.get("text_pair")
            return r[key] + (f" [SEP] {pair}" if isinstance(pair, str) else "")
    return ""


def side_by_side(runs: list[RunResults], k: int = SIDE_BY_SIDE) -> tuple[list[str], list[dict]]:
    """(run names, rows): the first ``k`` test inputs all runs share, with each run's output."""
    runs = [r for r in runs if r.records]
    if not runs:
        return [], []
    by_run = [{str(x.get("id")): x for x in r.records or []} for r in runs]
    rows = []
    for rec in runs[0].records or []:
        rid = str(rec.get("id"))
        if all(rid in m for m in by_run):
            rows.append({"id": rid, "input": record_input(rec), "reference": rec.get("reference"),
                         "outputs": [str(m[rid].get("prediction")) for m in by_run]})
        if len(rows) >= k:
            break
    return [r.name for r in runs], rows


def report_sections(runs: list[RunResults]) -> list[Section]:
    """The outputs side by side (none when no rung's predictions could be read)."""
    names, rows = side_by_side(runs)
    if not rows:
        return []
    md = md_table(["id", "input", "reference", *names],
                  [[row["id"], clip(row["input"]), clip(str(row["reference"])), *map(clip, row["outputs"])]
                   for row in rows])
    header = [("id", False), ("input", False), ("reference", False), *[(n, False) for n in names]]
    body = [
        "<tr>" + cell(row["id"]) + cell(row["input"], cls="text") + cell(row["reference"], cls="text")
        + "".join(cell(o, cls="text") for o in row["outputs"]) + "</tr>"
        for row in rows
    ]
    html = f"<p class=\"note\">The same test inputs, with each rung's output.</p>{table('outputs', header, body)}"
    return [Section("side-by-side", "Outputs side by side", md, html)]
