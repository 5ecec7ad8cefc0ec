"""What the report shows for sentence embeddings: every metric of every rung (the primary one with its interval),
then the best rung's hardest test examples: the queries whose relevant document it ranks lowest, with its top
hits; the pairs whose cosine disagrees most with the gold score or label; the triplets it gets most wrong.

Paired tests (one rung against the best on the same examples): per-query retrieval values with a paired bootstrap
on their mean, triplets with McNemar's test, and the corpus metrics (Spearman, Pearson, average precision, ROC AUC,
best accuracy) with a paired bootstrap over pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from adaptlab.reporting.markup import cell, clip, esc, fmt, md_table, table
from adaptlab.reporting.sections import RunResults, Section
from adaptlab.reporting.significance import bootstrap_test, corpus_bootstrap_test, mcnemar_test, no_test
from adaptlab.tasks.embedding.settings import ALL_METRICS, PAIR_METRICS

HARDEST = 8
SHOWN_HITS = 3


def paired_test(best: list[dict], other: list[dict], metric: str) -> dict:
    """The test of ``other`` against ``best`` on ``metric`` (records already paired by id)."""
    if not best:
        return no_test("no paired examples")
    if metric == "triplet_accuracy":
        return mcnemar_test([r["prediction"] == "positive" for r in best],
                            [r["prediction"] == "positive" for r in other])
    if all(metric in (r.get("metrics") or {}) for r in best + other):
        return bootstrap_test([r["metrics"][metric] for r in best], [r["metrics"][metric] for r in other])
    if metric in PAIR_METRICS["scored_pairs"] + PAIR_METRICS["labelled_pairs"]:
        return corpus_bootstrap_test(_pair_statistic(best, other, metric), len(best), f"{metric}, pairs resampled")
    return no_test(f"no per-example {metric} to pair")


def _pair_statistic(best: list[dict], other: list[dict], metric: str) -> Any:
    """(best, other) ``metric`` on resampled pairs; 0 for both where a resample can't define it (conservative)."""
    from adaptlab.tasks.embedding.metrics import correlation_resamples, separation

    a = np.array([r["prediction"] for r in best], dtype=np.float64)
    b = np.array([r["prediction"] for r in other], dtype=np.float64)
    if metric in PAIR_METRICS["scored_pairs"]:
        gold = np.array([r["reference"] for r in best], dtype=np.float64)

        def on(x: np.ndarray, idx: np.ndarray) -> float:
            return float(correlation_resamples(x, gold, idx[None, :])[metric][0])
    else:
        gold = np.array([bool(r["positive"]) for r in best])

        def on(x: np.ndarray, idx: np.ndarray) -> float:
            return separation(x[idx], gold[idx])[metric]

    def stat(idx: np.ndarray) -> tuple[float, float]:
        value_a, value_b = on(a, idx), on(b, idx)
        return (0.0, 0.0) if math.isnan(value_a) or math.isnan(value_b) else (value_a, value_b)

    return stat


def report_sections(runs: list[RunResults]) -> list[Section]:
    if not runs:
        return []
    sections = [metrics_section(runs)]
    if runs[0].records:
        sections.append(hardest_section(runs[0]))
    return sections


def metrics_section(runs: list[RunResults]) -> Section:
    first = runs[0].metrics
    names = [m for m in first.get("metrics", {}) if m in ALL_METRICS]
    primary = first.get("primary_metric")
    header = ["rung", *names]
    rows, html_rows = [], []
    for run in runs:
        values = run.metrics.get("metrics", {})
        shown = [_with_interval(values.get(m), run.metrics.get("intervals", {}).get(m)) if m == primary
                 else fmt(values.get(m)) for m in names]
        rows.append([run.name, *shown])
        html_rows.append("<tr>" + cell(run.name) + "".join(cell(s, values.get(m)) for s, m in zip(shown, names))
                         + "</tr>")
    size = f", searching a corpus of {first['corpus_size']} documents" if first.get("corpus_size") else ""
    note = (f"Every metric on the test split ({first.get('format', '?')}, {first.get('n', '?')} examples{size}); "
            f"the rungs are ranked by {primary}, shown with its 95% bootstrap interval.")
    if first.get("format") == "labelled_pairs":
        note += " best_accuracy picks its cosine threshold on the test pairs themselves, so it is optimistic."
    html = f'<p class="note">{esc(note)}</p>' + table("embedding-metrics", [(h, i > 0) for i, h in enumerate(header)],
                                                      html_rows)
    return Section("embedding-metrics", "Embedding metrics", note + "\n\n" + md_table(header, rows), html)


def _with_interval(value: Any, interval: Any) -> str:
    if isinstance(interval, list) and len(interval) == 2:
        return f"{fmt(value)} [{fmt(interval[0])}, {fmt(interval[1])}]"
    return fmt(value)


def hardest_section(run: RunResults) -> Section:
    """The best rung's hardest examples as a table, with a note on how they were chosen."""
    kind = run.metrics.get("format")
    builders = {"retrieval": _hardest_queries, "scored_pairs": _hardest_scored, "labelled_pairs": _hardest_labelled,
                "triplets": _hardest_triplets}
    if kind not in builders:
        return Section("embedding-hardest", "Hardest examples", "No examples: unknown format.", "")
    note, header, rows = builders[kind](run.records or [])
    note = f"{run.name}: {note}"
    html_rows = ["<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows]
    html = f'<p class="note">{esc(note)}</p>' + table("embedding-hardest", [(h, False) for h in header], html_rows,
                                                      False)
    return Section("embedding-hardest", "Hardest examples", note + "\n\n" + md_table(header, rows), html)


def _hardest_queries(records: list[dict]) -> tuple[str, list[str], list[list[str]]]:
    worst = sorted(records, key=lambda r: -min(r["relevant_ranks"]))[:HARDEST]
    rows = [[r["id"], clip(r["query"], 120), str(min(r["relevant_ranks"])), clip(r["relevant_texts"][0], 80),
             " · ".join(f"{clip(t, 60)} ({fmt(s, 2)})" for t, s in zip(r["top_texts"][:SHOWN_HITS],
                                                                   r["top_scores"][:SHOWN_HITS]))]
            for r in worst]
    return ("the test queries whose relevant document it ranks lowest, with its top hits and their cosines.",
            ["id", "query", "rank", "relevant document", f"top {SHOWN_HITS} hits"], rows)


def _hardest_scored(records: list[dict]) -> tuple[str, list[str], list[list[str]]]:
    from scipy.stats import rankdata

    n = max(len(records), 1)
    gap = np.abs(rankdata([r["prediction"] for r in records]) - rankdata([r["reference"] for r in records])) / n
    worst = [records[i] for i in np.argsort(-gap, kind="stable")[:HARDEST]]
    rows = [[r["id"], clip(r["first"], 80), clip(r["second"], 80), fmt(r["reference"]), fmt(r["prediction"])]
            for r in worst]
    return ("the pairs whose cosine is ranked furthest from their gold score's rank (scores rescaled to [0, 1]).",
            ["id", "sentence 1", "sentence 2", "gold score", "cosine"], rows)


def _hardest_labelled(records: list[dict]) -> tuple[str, list[str], list[list[str]]]:
    positives = sorted((r for r in records if r["positive"]), key=lambda r: r["prediction"])[:HARDEST // 2]
    negatives = sorted((r for r in records if not r["positive"]), key=lambda r: -r["prediction"])[:HARDEST // 2]
    rows = [[r["id"], clip(r["first"], 80), clip(r["second"], 80), str(r["reference"]), fmt(r["prediction"])]
            for r in positives + negatives]
    return ("the positive pairs with the lowest cosines, then the negative pairs with the highest.",
            ["id", "sentence 1", "sentence 2", "label", "cosine"], rows)


def _hardest_triplets(records: list[dict]) -> tuple[str, list[str], list[list[str]]]:
    wrong = sorted((r for r in records if r["prediction"] != "positive"),
                   key=lambda r: r["cosine_positive"] - r["cosine_negative"])[:HARDEST]
    rows = [[r["id"], clip(r["first"], 60), clip(r["second"], 60), clip(r["negative"], 60),
             fmt(r["cosine_positive"]), fmt(r["cosine_negative"])] for r in wrong]
    return ("the triplets it gets most wrong: the anchor closer to the negative than to the positive.",
            ["id", "anchor", "positive", "negative", "cos(anchor, positive)", "cos(anchor, negative)"], rows)
