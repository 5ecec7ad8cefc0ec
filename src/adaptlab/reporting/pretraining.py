"""The report's section on domain pre-training: what a pre-training stage (domain_mlm) did, and the gain of each rung
run both with and without it, with the paired test on the same test examples.

A pre-training stage is a finished rung whose metrics.json says ``"predicts": false`` (see
:attr:`adaptlab.methods.base.Method.predicts`): it has no value of the primary metric, so it is not ranked. A rung
"with pre-training" is a finished rung whose run.json ``from`` names such a stage; its pair "without" is a finished
rung of the same method with the same params and no ``from``. The paired test is the task's (McNemar's test on
per-example correctness for classification), through the report's own pairing by example id.
"""

from __future__ import annotations

from collections.abc import Callable

from adaptlab.reporting.markup import cell, esc, fmt, md_table, table
from adaptlab.reporting.recommend import fmt_p
from adaptlab.reporting.runs import Run
from adaptlab.reporting.sections import Section

#: (run without pre-training, run with it) -> the paired test dict (method, p_value, detail, n)
PairedTest = Callable[[Run, Run], dict]


def is_stage(run: Run) -> bool:
    """A finished pre-training stage: it predicts nothing, so the report shows it here and leaves it unranked."""
    return run.status == "ok" and run.metrics.get("predicts") is False


def _parent(run: Run) -> str | None:
    parent = run.info.get("from")
    return parent.get("rung") if isinstance(parent, dict) else None


def pairs(runs: list[Run], stages: list[Run]) -> list[tuple[Run, Run, Run]]:
    """(stage, rung with it, the same rung without it) for every finished rung started from a stage that has a twin
    of the same method and params without ``from``, in the given order."""
    by_rung = {(s.ladder, s.rung): s for s in stages}
    found = []
    for run in runs:
        stage = by_rung.get((run.ladder, _parent(run)))
        if stage is None:
            continue
        same = [r for r in runs if r.ladder == run.ladder and _parent(r) is None
                and (r.info.get("rung") or {}).get("method") == (run.info.get("rung") or {}).get("method")
                and r.info.get("params") == run.info.get("params")]
        if same:
            found.append((stage, run, same[0]))
    return found


def _stage_text(stage: Run) -> str:
    m, c = stage.metrics.get("metrics") or {}, stage.cost
    return (f"masked-LM perplexity on {m.get('perplexity_texts', '?')} test texts {fmt(m.get('perplexity_before'), 2)}"
            f" before, {fmt(m.get('perplexity_after'), 2)} after; trained {fmt(c.get('train_seconds'), 1)} s on "
            f"{human(c.get('trainable_params'))} parameters")


def human(n: object) -> str:
    from adaptlab.reporting.table import human_count

    return human_count(n)


def _row(trio: tuple[Run, Run, Run], test: dict) -> list[str]:
    stage, with_, without = trio
    gain = with_.value - without.value if with_.value is not None and without.value is not None else None
    p = test.get("p_value")
    return [with_.name, without.name, stage.name, fmt(with_.value), fmt(without.value),
            "-" if gain is None else f"{gain:+.3f}", str(test.get("method") or f"none ({test.get('detail')})"),
            "-" if p is None else fmt_p(p), fmt(((with_.cost.get("from_rung") or {}).get("train_seconds")), 1)]


def pretraining_section(runs: list[Run], stages: list[Run], paired_test: PairedTest, metric: str,
                        higher_is_better: bool) -> Section | None:
    """'Gain from domain pre-training': each stage in words, then one row per rung run with and without it (the
    difference of the primary metric and the paired test). None when the report holds no stage."""
    if not stages:
        return None
    trios = pairs(runs, stages)
    header = ["with pre-training", "without", "from", f"{metric} with", f"{metric} without", "gain (with - without)",
              "paired test", "p", "pre-training s"]
    rows = [_row(trio, paired_test(trio[2], trio[1])) for trio in trios]
    direction = "higher" if higher_is_better else "lower"
    lines = [f"- `{s.name}`: {_stage_text(s)}." for s in stages]
    note = (f"A positive gain means the pre-trained rung scores higher ({direction} is better for {metric}). The "
            "cost of a rung with pre-training includes the stage's training time (train s in the leaderboard).")
    if not rows:
        note = ("No rung ran both with and without pre-training (same method and params, with and without `from`), "
                "so there is no gain to show. " + note)
    markdown = "\n".join(lines) + "\n\n" + (md_table(header, rows) + "\n\n" if rows else "") + note
    numeric = {3, 4, 5, 7, 8}
    html_rows = ["<tr>" + "".join(cell(v, cls="num" if i in numeric else "") for i, v in enumerate(row)) + "</tr>"
                 for row in rows]
    items = "".join(f"<li><code>{esc(s.name)}</code>: {esc(_stage_text(s))}.</li>" for s in stages)
    columns = [(h, i in numeric) for i, h in enumerate(header)]
    html_table = table("pretraining-gain", columns, html_rows) if rows else ""
    return Section("pretraining", "Gain from domain pre-training", markdown,
                   f"<ul>{items}</ul>{html_table}<p class=\"note\">{esc(note)}</p>")
