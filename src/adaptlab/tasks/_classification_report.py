"""What the report shows for a classification ladder: the paired test on per-example correctness, each rung's
confusion matrix, and the wrong predictions each rung was most confident in.
"""

from __future__ import annotations

from adaptlab.reporting.markup import cell, clip, esc, fmt, md_table, table
from adaptlab.reporting.sections import RunResults, Section
from adaptlab.reporting.significance import mcnemar_test

WORST_ERRORS = 8


def paired_test(best: list[dict], other: list[dict]) -> dict:
    """McNemar's test on per-example correctness: macro-F1 has no per-example value, right or wrong has."""
    return mcnemar_test([r.get("prediction") == r.get("reference") for r in best],
                        [r.get("prediction") == r.get("reference") for r in other])


def confusion(run: RunResults) -> tuple[list[str], list[list[int]]] | None:
    """(labels, matrix[reference][prediction]) from metrics.json, else counted from the predictions."""
    labels, matrix = run.metrics.get("labels"), run.metrics.get("confusion_matrix")
    if isinstance(labels, list) and isinstance(matrix, list) and len(matrix) == len(labels):
        return [str(x) for x in labels], matrix
    records = run.records or []
    if not records:
        return None
    names = list((records[0].get("scores") or {}).keys()) or sorted(
        {str(r.get("reference")) for r in records} | {str(r.get("prediction")) for r in records}
    )
    index = {n: i for i, n in enumerate(names)}
    counts = [[0] * len(names) for _ in names]
    for r in records:
        i, j = index.get(str(r.get("reference"))), index.get(str(r.get("prediction")))
        if i is not None and j is not None:
            counts[i][j] += 1
    return names, counts


def worst_errors(run: RunResults, k: int = WORST_ERRORS) -> list[dict]:
    """The ``k`` wrong predictions the rung was most confident in (probability of its predicted label)."""
    wrong = []
    for r in run.records or []:
        if r.get("prediction") == r.get("reference"):
            continue
        conf = (r.get("scores") or {}).get(r.get("prediction"))
        wrong.append({
            "id": r.get("id"), "text": r.get("text", ""), "text_pair": r.get("text_pair"),
            "reference": r.get("reference"), "prediction": r.get("prediction"),
            "confidence": float(conf) if isinstance(conf, (int, float)) else None,
        })
    wrong.sort(key=lambda e: -(e["confidence"] if e["confidence"] is not None else -1))
    return wrong[:k]


def report_sections(runs: list[RunResults]) -> list[Section]:
    return [confusion_section(runs), errors_section(runs)]


def confusion_section(runs: list[RunResults]) -> Section:
    note = "Rows: reference label; columns: predicted label."
    md = [note]
    for r in runs:
        cm = confusion(r)
        if cm:
            labels, matrix = cm
            rows = [[lab, *row] for lab, row in zip(labels, matrix, strict=False)]
            md += ["", f"### {r.name}", "", md_table(["reference \\ predicted", *labels], rows)]
    grid = "".join(_confusion_html(r) for r in runs)
    html = f'<p class="note">{note}</p><div class="cm-grid">{grid}</div>'
    return Section("confusion", "Confusion matrices", "\n".join(md), html)


def _confusion_html(run: RunResults) -> str:
    """One rung's confusion matrix as a table shaded by count."""
    cm = confusion(run)
    if not cm:
        return ""
    labels, matrix = cm
    peak = max((max(row) for row in matrix if row), default=0) or 1
    rows = []
    for label, row in zip(labels, matrix, strict=False):
        cells = "".join(
            f'<td class="num" style="background:rgba(31,111,235,{0.08 + 0.8 * v / peak:.2f})'
            f'{";color:#fff" if v / peak > 0.55 else ""}">{int(v)}</td>'
            for v in row
        )
        rows.append(f'<tr><th scope="row">{esc(label)}</th>{cells}</tr>')
    head = "".join(f'<th scope="col" class="num">{esc(x)}</th>' for x in labels)
    return (f'<div><h3>{esc(run.name)}</h3><table class="confusion"><thead><tr><th>reference \\ predicted</th>{head}'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def errors_section(runs: list[RunResults]) -> Section:
    md = ["The wrong predictions each rung was most confident in."]
    html = []
    for i, r in enumerate(runs):
        errs = worst_errors(r)
        if not errs:
            continue
        md += ["", f"### {r.name}", "", md_table(
            ["id", "text", "reference", "predicted", "confidence"],
            [[e["id"], clip(e["text"]), e["reference"], e["prediction"], fmt(e["confidence"])] for e in errs])]
        rows = [
            f"<tr>{cell(e['id'])}{cell(_with_pair(e), cls='text')}"
            f"{cell(e['reference'])}{cell(e['prediction'])}{cell(fmt(e['confidence']), e['confidence'], 'num')}</tr>"
            for e in errs
        ]
        tbl = table(f"errors-{i}", [("id", False), ("text", False), ("reference", False), ("predicted", False),
                                     ("confidence", True)], rows)
        html.append(f"<details{' open' if r.recommended else ''}><summary>{esc(r.name)} ({len(errs)})</summary>"
                    f"{tbl}</details>")
    note = ('<p class="note">The wrong predictions each rung was most confident in (probability of the predicted '
            "label).</p>")
    return Section("errors", "Worst errors", "\n".join(md), note + ("".join(html) or "None."))


def _with_pair(e: dict) -> str:
    return e["text"] + (f" [SEP] {e['text_pair']}" if e.get("text_pair") else "")
