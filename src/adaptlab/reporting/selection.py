"""The report's section on the weights each trained rung kept: its validation curve and one line saying which step
was kept and by what (``training.selection`` of metrics.json, see :func:`adaptlab.training.train`).

Rungs that do not train by steps (prompting, probes) record no selection and are left out; a report whose rungs
record none has no such section.
"""

from __future__ import annotations

from adaptlab.reporting import charts as C
from adaptlab.reporting.markup import esc, fmt
from adaptlab.reporting.runs import Run
from adaptlab.reporting.sections import Section


def _selection(run: Run) -> tuple[dict, dict] | None:
    """(training record, its selection) of a run that recorded one."""
    training = run.metrics.get("training")
    selection = training.get("selection") if isinstance(training, dict) else None
    return (training, selection) if isinstance(selection, dict) else None


def selection_text(run: Run) -> str | None:
    """Which weights a trained rung kept and by what, in words; None when it recorded no selection."""
    found = _selection(run)
    if found is None:
        return None
    training, sel = found
    planned = (training.get("schedule") or {}).get("steps")
    of = f" of {planned}" if isinstance(planned, int) else ""
    evaluations = sel.get("evaluations") or 0
    if sel.get("by") in ("metric", "loss") and sel.get("best_step") is not None:
        what = f"the best validation {sel.get('metric')}" if sel["by"] == "metric" else "the lowest validation loss"
        text = (f"kept step {sel.get('kept_step')}{of}, {what} ({fmt(sel.get('best_value'), 4)}) over {evaluations} "
                f"evaluation{'s' if evaluations != 1 else ''}")
    else:
        why = sel.get("note") or ("select_best: last" if sel.get("requested") == "last"
                                  else "no evaluation gave a finite score")
        text = f"kept the final weights (step {sel.get('kept_step')}{of}): {why}"
    if sel.get("stopped_early_at") is not None:
        text += f"; stopped early at step {sel['stopped_early_at']} (patience {sel.get('patience')})"
    return text + "."


def selection_section(runs: list[Run], colours: dict[str, int], metric: str,
                      higher_is_better: bool) -> Section | None:
    """'Weights kept': the validation curves (HTML) and one line per trained rung (both views)."""
    lines = [(r, text) for r in runs if (text := selection_text(r)) is not None]
    if not lines:
        return None
    chart = C.validation_curves(
        [(r.name, colours.get(r.name, 0), r.metrics.get("history") or [], _selection(r)[1].get("kept_step"))
         for r, _ in lines], metric, higher_is_better)
    markdown = "\n".join(f"- `{r.name}`: {text}" for r, text in lines)
    if chart is not None:
        markdown += "\n\nThe validation curves are in report.html."
    items = "".join(f"<li><code>{esc(r.name)}</code>: {esc(text)}</li>" for r, text in lines)
    figure = "" if chart is None else (f'<figure class="chart wide" id="{esc(chart.id)}" data-chart="{esc(chart.id)}">'
                                       f"{chart.svg}<figcaption>{esc(chart.caption)}</figcaption></figure>")
    note = ('<p class="note">Trained rungs evaluate the validation split during training and keep the weights '
            "select_best asks for: the best task metric (metric), the lowest validation loss (loss) or the final "
            "weights (last); early_stopping_patience stops a rung whose score stopped improving.</p>")
    return Section("weights-kept", "Weights kept (validation during training)", markdown,
                   f"{figure}<ul>{items}</ul>{note}")
