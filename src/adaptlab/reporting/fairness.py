"""The report's view of a fair ladder: tuned vs default settings per rung (``tuning:``), and each rung's spread
over training seeds (``seeds:``), with the rule that calls two rungs different across seeds.

Both read what the pipeline wrote into each rung's metrics.json (``tuning`` and ``seeds``, see
:func:`adaptlab.pipeline.run_configured`); a report of runs without them has neither section.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt

from adaptlab.evaluation.seeds import RULE as SEED_RULE
from adaptlab.evaluation.seeds import combine
from adaptlab.reporting import charts as C
from adaptlab.reporting.markup import cell, esc, fmt, md_table, table
from adaptlab.reporting.runs import Run
from adaptlab.reporting.sections import Section


def _params(params: dict | None) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in (params or {}).items()) or "-"


def _score(block: dict, key: str) -> str:
    iv = block.get("interval") if key == "test" else None
    text = fmt(block.get(key))
    return f"{text} [{fmt(iv[0])}, {fmt(iv[1])}]" if iv and len(iv) == 2 else text


def _tuning_rows(tuned: list[Run]) -> list[list[str]]:
    rows = []
    for r in tuned:
        t = r.result.tuning or {}
        default, chosen = t.get("default") or {}, t.get("tuned") or {}
        counts = (f"{t.get('trials')} ({t.get('complete')} complete, {t.get('pruned')} pruned, "
                  f"{t.get('failed')} failed)")
        gain = (chosen.get("test") - default.get("test")
                if isinstance(chosen.get("test"), (int, float)) and isinstance(default.get("test"), (int, float))
                else None)
        rows.append([r.name, counts, _params(default.get("params")), _score(default, "validation"),
                     _score(default, "test"), _params(chosen.get("params")), _score(chosen, "validation"),
                     _score(chosen, "test"), "-" if gain is None else f"{gain:+.3f}"])
    return rows


def _ranking(tuned: list[Run], key: str, higher_is_better: bool) -> list[tuple[str, float]]:
    scored = [(r.name, (r.result.tuning or {}).get(key, {}).get("test")) for r in tuned]
    scored = [(n, float(v)) for n, v in scored if isinstance(v, (int, float)) and math.isfinite(v)]
    return sorted(scored, key=lambda x: -x[1] if higher_is_better else x[1])


def _ranking_text(tuned: list[Run], higher_is_better: bool, tests: dict[str, dict]) -> str:
    """The tuned and default rankings on test, whether tuning changed the order, and the evidence: each tuned rung's
    paired test against the best rung of the report (the leaderboard's)."""
    after, before = _ranking(tuned, "tuned", higher_is_better), _ranking(tuned, "default", higher_is_better)
    if not after:
        return "No tuned rung finished."
    words = " > ".join(f"{n} ({v:.3f})" for n, v in after)
    same = [n for n, _ in after] == [n for n, _ in before]
    change = ("the same order as with default settings." if same else "default settings ranked them "
              + " > ".join(f"{n} ({v:.3f})" for n, v in before) + ".")
    evidence = [f"{n}: p = {fmt(tests[n]['p_value'])} ({tests[n].get('method')})" for n, _ in after
                if (tests.get(n) or {}).get("p_value") is not None]
    against = (" Against the best rung on the same test examples: " + "; ".join(evidence) + " (p < 0.05: a real "
               "difference).") if evidence else ""
    return (f"Tuned ranking on test: {words}; {change} Each rung had the same budget and chose its settings on the "
            f"validation split alone.{against}")


def history_chart(tuned: list[Run], colours: dict[str, int], metric: str, higher_is_better: bool) -> C.Chart | None:
    """Each trial's validation score (points) and the best so far (steps), one colour per rung."""
    fig, ax = plt.subplots(figsize=(10.0, 3.6))
    drawn = False
    for r in tuned:
        trials = [(h["trial"], h["validation"]) for h in (r.result.tuning or {}).get("history", [])
                  if h.get("state") == "complete" and isinstance(h.get("validation"), (int, float))]
        if not trials:
            continue
        xs, ys = zip(*trials, strict=True)
        best, running = [], None
        for y in ys:
            running = y if running is None else (max(running, y) if higher_is_better else min(running, y))
            best.append(running)
        ax.plot(xs, ys, "o", color=C.colour(colours.get(r.name, 0)), markersize=5, label=f"{r.name} (trial)")
        ax.step(xs, best, where="post", color=C.colour(colours.get(r.name, 0)), linewidth=1.3)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("trial (0 = default settings)")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("tuning: search history", fontsize=10)
    caption = ("Validation score of every completed trial (points) and the best so far (line), per tuned rung; "
               "pruned and failed trials are counted in the table, not drawn.")
    return C.Chart("tuning-history", "tuning: search history", caption, C.to_svg(fig, "tuning-history"))


def tuning_section(runs: list[Run], colours: dict[str, int], metric: str, higher_is_better: bool,
                   tests: dict[str, dict]) -> Section | None:
    """Per tuned rung: its budget's trials, default vs tuned settings and scores, and the search history chart."""
    tuned = [r for r in runs if r.result.tuning]
    if not tuned:
        return None
    budget = (tuned[0].result.tuning or {}).get("budget") or {}
    intro = (f"Every tuned rung had the same budget ({budget.get('trials') or '-'} trials, "
             f"{budget.get('minutes') or '-'} minutes) and chose its settings on the validation split "
             f"({(tuned[0].result.tuning or {}).get('metric')}); the test split was read only by the chosen settings "
             "and, for this comparison, the default ones.")
    header = ["rung", "trials", "default params", "default val", "default test [95% CI]", "tuned params",
              "tuned val", "tuned test [95% CI]", "test gain"]
    rows = _tuning_rows(tuned)
    ranking = _ranking_text(tuned, higher_is_better, tests)
    chart = history_chart(tuned, colours, metric, higher_is_better)
    html_rows = [f"<tr>{''.join(cell(c) for c in row)}</tr>" for row in rows]
    fig = "" if chart is None else (f'<figure class="chart wide" id="{chart.id}" data-chart="{chart.id}">'
                                    f"{chart.svg}<figcaption>{esc(chart.caption)}</figcaption></figure>")
    html = (f"<p>{esc(intro)}</p>" + table("tuning", [(h, False) for h in header], html_rows)
            + f"<p>{esc(ranking)}</p>{fig}")
    return Section("tuning", "Tuning: default vs tuned", f"{intro}\n\n{md_table(header, rows)}\n\n{ranking}", html)


def seeds_section(runs: list[Run]) -> Section | None:
    """Per rung repeated over training seeds: the value per seed, mean, standard deviation and range."""
    seeded = [r for r in runs if r.result.seeds]
    if not seeded:
        return None
    seeds = [str(s) for s in (seeded[0].result.seeds or {}).get("seeds", [])]
    header = ["rung", *[f"seed {s}" for s in seeds], "mean", "std", "min-max"]
    rows = []
    for r in seeded:
        s = r.result.seeds or {}
        values = s.get("values") or {}
        rows.append([r.name, *[fmt(values.get(k)) for k in seeds], fmt(s.get("mean")), fmt(s.get("std")),
                     f"{fmt(s.get('min'))}-{fmt(s.get('max'))}"])
    intro = (f"Each training rung was trained with {len(seeds)} seeds on the same split; the shipped run is seed "
             f"{seeds[0]}'s. {SEED_RULE}")
    html_rows = [f"<tr>{''.join(cell(c) for c in row)}</tr>" for row in rows]
    html = f"<p>{esc(intro)}</p>" + table("seeds", [(h, h != "rung") for h in header], html_rows)
    return Section("seeds", "Training seeds", f"{intro}\n\n{md_table(header, rows)}", html)


def seed_aware_tests(tests: dict[str, dict], ok: list[Run], best_name: str | None, higher_is_better: bool,
                     test_on: Callable[[Path, Path], dict | None]) -> dict[str, dict]:
    """The paired tests with the seed rule applied: for a rung and the best both repeated over seeds, the test is
    run on each seed's predictions (``test_on(best_dir, run_dir)``, None when a seed's run is missing or failed)
    and combined by :func:`adaptlab.evaluation.seeds.combine`; a seed either rung lacks counts as not shown (p 1).
    Other rungs keep their single test."""
    best = next((r for r in ok if r.name == best_name), None)
    if best is None or not best.result.seeds:
        return tests
    out = dict(tests)
    best_dirs = best.result.seeds.get("dirs") or {}
    for r in ok:
        if r is best or not r.result.seeds or r.name not in tests:
            continue
        dirs = r.result.seeds.get("dirs") or {}
        per_seed = []
        for seed in sorted(set(best_dirs) | set(dirs)):
            both = seed in best_dirs and seed in dirs
            test = test_on(best.path.parent / best_dirs[seed], r.path.parent / dirs[seed]) if both else None
            per_seed.append((test.get("p_value"), test["best_value"], test["value"]) if test else (None, 0.0, 0.0))
        p, first = combine(per_seed, higher_is_better), tests[r.name]
        out[r.name] = {**first, "p_value": p, "method": f"{first.get('method')}, on each of {len(per_seed)} seeds",
                       "detail": f"largest p over seeds {fmt(p)}; " + str(first.get("detail") or "")}
    return out
