"""What the report shows for token classification: entity F1 per type for every rung, the confusion of entity types
of the best rung, its worst sentences with gold and predicted entities highlighted, and data notes (tag repairs,
words past max_length, unparsed answers). The paired test resamples sentences (entity F1 is a corpus metric)."""

from __future__ import annotations

from adaptlab.reporting.markup import cell, clip, esc, fmt, md_table, table
from adaptlab.reporting.sections import RunResults, Section
from adaptlab.reporting.significance import corpus_bootstrap_test, no_test

WORST_SENTENCES = 8
_GOLD = "background:#dbeafe;border-bottom:2px solid #2563eb"
_RIGHT = "background:#dcfce7;border-bottom:2px solid #16a34a"
_WRONG = "background:#fee2e2;border-bottom:2px solid #dc2626"


def paired_test(best: list[dict], other: list[dict], metric: str) -> dict:
    from adaptlab.tasks.token_classification.metrics import entity_counts, scores_from_counts

    if not best:
        return no_test("no paired sentences")
    refs = [r["reference"] for r in best]
    types = sorted({t[2:] for tags in refs for t in tags if t != "O"})
    counts_best = entity_counts(refs, [r["prediction"] for r in best], types)
    counts_other = entity_counts(refs, [r["prediction"] for r in other], types)
    name = metric if metric.startswith("entity_") else "entity_micro_f1"

    def stat(idx):
        return (float(scores_from_counts(counts_best[idx].sum(axis=0))[name]),
                float(scores_from_counts(counts_other[idx].sum(axis=0))[name]))

    return corpus_bootstrap_test(stat, len(best), f"{name}, sentences resampled")


def report_sections(runs: list[RunResults]) -> list[Section]:
    if not runs:
        return []
    return [types_section(runs), confusion_section(runs[0]), sentences_section(runs[0])]


def types_section(runs: list[RunResults]) -> Section:
    types = sorted({t for r in runs for t in (r.metrics.get("per_type") or {})})
    header = ["entity type", "support", *[r.name for r in runs]]
    support = {t: next((r.metrics["per_type"][t]["support"] for r in runs if t in (r.metrics.get("per_type") or {})),
                       0) for t in types}
    rows = [[t, support[t], *[fmt(((r.metrics.get("per_type") or {}).get(t) or {}).get("f1")) for r in runs]]
            for t in types]
    note = "Entity F1 per type (exact span and type), test split. " + _data_notes(runs)
    html_rows = ["<tr>" + cell(t) + cell(support[t], support[t]) + "".join(
        cell(fmt(((r.metrics.get("per_type") or {}).get(t) or {}).get("f1")),
             ((r.metrics.get("per_type") or {}).get(t) or {}).get("f1")) for r in runs) + "</tr>" for t in types]
    html = f'<p class="note">{esc(note)}</p>' + table("entity-types", [(h, i > 0) for i, h in enumerate(header)],
                                                      html_rows)
    return Section("entity-types", "Entity types", note + "\n\n" + md_table(header, rows), html)


def _data_notes(runs: list[RunResults]) -> str:
    first = runs[0].metrics
    notes = [f"Tags read as {first.get('scheme') or '?'}"]
    repairs = first.get("tag_repairs") or {}
    if any(repairs.values()):
        notes.append("I- tags that opened an entity were repaired to B- (" +
                     ", ".join(f"{k} {v}" for k, v in repairs.items() if v) + ")")
    cut = {r.name: r.metrics.get("words_cut") for r in runs if r.metrics.get("words_cut")}
    if cut:
        notes.append("words past data.max_length, predicted O: " + ", ".join(f"{k} {v}" for k, v in cut.items()))
    unparsed = {r.name: r.metrics.get("metrics", {}).get("unparsed_share") for r in runs
                if r.metrics.get("metrics", {}).get("unparsed_share")}
    if unparsed:
        notes.append("unparseable answers: " + ", ".join(f"{k} {v:.0%}" for k, v in unparsed.items()))
    return "; ".join(notes) + "."


def confusion_section(run: RunResults) -> Section:
    confusion = run.metrics.get("type_confusion") or {"labels": [], "matrix": []}
    labels, matrix = confusion["labels"], confusion["matrix"]
    note = (f"{run.name}: rows are gold entity types, columns the type predicted over the same words; 'none' is a "
            "missed entity (column) or a predicted entity with no gold one (row).")
    rows = [[lab, *row] for lab, row in zip(labels, matrix)]
    html_rows = ["<tr>" + cell(lab) + "".join(cell(v, v) for v in row) + "</tr>" for lab, row in zip(labels, matrix)]
    html = f'<p class="note">{esc(note)}</p>' + table(
        "entity-confusion", [("gold \\ predicted", False), *[(lab, True) for lab in labels]], html_rows, False)
    return Section("entity-confusion", "Entity type confusion", note + "\n\n" +
                   md_table(["gold \\ predicted", *labels], rows), html)


def _errors(record: dict) -> int:
    gold = {(e["start"], e["end"], e["label"]) for e in record.get("gold_entities", [])}
    found = {(e["start"], e["end"], e["label"]) for e in record.get("entities", [])}
    return len(gold ^ found)


def sentences_section(run: RunResults) -> Section:
    worst = sorted((r for r in run.records or [] if _errors(r)), key=lambda r: -_errors(r))[:WORST_SENTENCES]
    note = (f"{run.name}: the test sentences with the most entity errors. Gold entities are blue; predicted ones "
            "green when exactly right, red otherwise.")
    md = [note, ""]
    for r in worst:
        md += [f"- `{r.get('id')}` {clip(r.get('text', ''), 200)}",
               "  - gold: " + (_listing(r.get("gold_entities", [])) or "none"),
               "  - predicted: " + (_listing(r.get("entities", [])) or "none")]
    items = "".join(
        f"<li><p><code>{esc(r.get('id'))}</code></p><p>gold: {_marked(r.get('text', ''), r['gold_entities'], None)}"
        f"</p><p>predicted: {_marked(r.get('text', ''), r['entities'], r['gold_entities'])}</p></li>" for r in worst)
    html = f'<p class="note">{esc(note)}</p><ol class="worst-sentences">{items}</ol>'
    return Section("worst-sentences", "Worst sentences", "\n".join(md), html)


def _listing(entities: list[dict]) -> str:
    return "; ".join(f"{e['text']} ({e['label']})" for e in entities)


def _marked(text: str, entities: list[dict], gold: list[dict] | None) -> str:
    """``text`` escaped with each entity in a <mark> showing its type; against ``gold``, right or wrong."""
    exact = {(e["start"], e["end"], e["label"]) for e in gold or []}
    out, at = [], 0
    for e in sorted(entities, key=lambda e: e["start"]):
        if e["start"] < at:
            continue
        style = _GOLD if gold is None else _RIGHT if (e["start"], e["end"], e["label"]) in exact else _WRONG
        out.append(esc(text[at:e["start"]]))
        out.append(f'<mark style="{style}" title="{esc(e["label"])}">{esc(text[e["start"]:e["end"]])}'
                   f'<sub>{esc(e["label"])}</sub></mark>')
        at = e["end"]
    out.append(esc(text[at:]))
    return "".join(out)
