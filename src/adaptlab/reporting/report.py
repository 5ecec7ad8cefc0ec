"""The ladder report: which rung to ship, and what it costs.

    write_report([Path("runs/rotten_tomatoes")], Path("runs/rotten_tomatoes"))   # report.md + report.html
    write_report([Path("runs/rt_minilm"), Path("runs/rt_bert")], Path("reports/rt"))  # two ladders, one page

Input: ladder output folders written by ``adaptlab compare`` (``leaderboard.json`` plus one folder per rung with
``metrics.json``, ``predictions.jsonl`` and ``run.json``), or single rung folders. Without a leaderboard, every
sub-folder holding a ``metrics.json`` is a run. Rungs are named by their rung name, prefixed by the ladder name
when the report holds more than one ladder (``rt_minilm/lora``).

Checks: a folder without runs, or runs of different tasks, primary metrics or data splits (``data_sha256``) in one
report, is a :class:`UserError` naming the runs on each side. A run whose ``metrics.json`` is missing or corrupted is
skipped with a warning naming it. Everything is computed before anything is written, and both files are written
atomically, so a report on disk is always whole.

Significance: every finished rung is tested against the best one on the same test examples, paired by ``id``:
McNemar's test on per-example correctness for classification, a paired bootstrap on per-example scores (ROUGE,
exact match, or a per-record ``metrics`` value) or on the corpus metric (BLEU, chrF) otherwise. The recommendation
rule is in :mod:`adaptlab.reporting.recommend`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.errors import UserError
from adaptlab.reporting import charts as C
from adaptlab.reporting.recommend import (
    Recommendation,
    best_entry,
    fmt_p,
    is_usable,
    pareto_front,
    quality_key,
    recommend,
)
from adaptlab.runs.files import read_jsonl, write_text_atomic

N_RESAMPLES = 1000
SEED = 0
WORST_ERRORS = 8
SIDE_BY_SIDE = 12
Warn = Callable[[str], None]


# ----------------------------------------------------------------------------------------------------- loading


@dataclass
class Run:
    """One rung's results as read from its folder."""

    name: str
    ladder: str
    rung: str
    path: Path
    metrics: dict
    info: dict = field(default_factory=dict)
    board: dict | None = None
    predictions: list[dict] | None = None

    @property
    def status(self) -> str:
        return str(self.metrics.get("status"))

    @property
    def value(self) -> float | None:
        return self.metrics.get("value")

    @property
    def cost(self) -> dict:
        return self.metrics.get("cost") or {}

    @property
    def provenance(self) -> dict:
        return self.metrics.get("provenance") or {}

    @property
    def task(self) -> str | None:
        return self.metrics.get("task") or (self.board or {}).get("task")

    @property
    def primary_metric(self) -> str | None:
        return self.metrics.get("primary_metric") or (self.board or {}).get("primary_metric")

    @property
    def data_sha256(self) -> str | None:
        return self.provenance.get("data_sha256") or (self.board or {}).get("data_sha256")

    @property
    def model(self) -> str | None:
        return self.provenance.get("model") or (self.board or {}).get("model")

    @property
    def failure(self) -> str:
        """Why an unusable run has no result, in words."""
        if self.metrics.get("error"):
            return str(self.metrics["error"])
        if self.status != "ok":
            return f"status '{self.status}', no error recorded"
        return f"value {self.value!r} is not a finite number"

    def entry(self) -> dict:
        """The leaderboard entry, named by the report's run name."""
        m = self.metrics
        return {
            "rung": self.name, "method": m.get("method"), "status": self.status, "value": self.value,
            "interval": m.get("interval"), "metrics": m.get("metrics") or {}, "cost": self.cost,
            "error": m.get("error"), "diagnosis": m.get("diagnosis"),
        }

    @property
    def flag(self) -> str:
        """'' or a short mark for a rung that learned nothing (degenerate) or is doubted."""
        d = self.metrics.get("diagnosis") or {}
        return "DEGENERATE" if d.get("degenerate") else "doubted" if d.get("findings") else ""


@dataclass
class Source:
    """The runs read from one ladder folder."""

    path: Path
    ladder: str
    board: dict | None
    runs: list[Run]
    #: Rungs of the ladder (ladder.json) with no results: the ladder was interrupted or run with --rungs.
    never_ran: list[str] = field(default_factory=list)


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, what is wrong)."""
    if not path.is_file():
        return None, f"{path.name} is missing"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} is corrupted ({type(exc).__name__}: {str(exc)[:120]})"


def _is_run_dir(path: Path) -> bool:
    return any((path / f).exists() for f in ("metrics.json", "run.json", "predictions.jsonl"))


def _load_run(path: Path, ladder: str, board: dict | None, warn: Warn) -> Run | None:
    metrics, problem = _read_json(path / "metrics.json")
    if problem is None and not (isinstance(metrics, dict) and "status" in metrics):
        problem = "metrics.json is corrupted (not a JSON object with a 'status' field)"
    if problem:
        warn(f"skipped run {path}: {problem}; re-run this rung (adaptlab compare CONFIG --rungs NAME) to replace it.")
        return None
    info, _ = _read_json(path / "run.json")
    rung = str(metrics.get("rung") or path.name)
    return Run(rung, ladder, rung, path, metrics, info if isinstance(info, dict) else {}, board)


def load_source(path: Path, warn: Warn) -> Source:
    """The runs of one ladder folder (or one rung folder); a UserError when there are none."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder. Pass a ladder output folder written by `adaptlab compare`.")
    single = (path / "metrics.json").exists() or (path / "run.json").exists()
    ladder_dir = path.parent if single else path
    board, problem = _read_json(ladder_dir / "leaderboard.json")
    if problem and (ladder_dir / "leaderboard.json").exists():
        warn(f"{ladder_dir / 'leaderboard.json'}: {problem}; reading the rung folders instead.")
    if not isinstance(board, dict) or not isinstance(board.get("rungs"), list):
        board = None
    if single:
        run_dirs = [path]
    elif board is not None:
        run_dirs = [path / str(e.get("dir") or e.get("rung")) for e in board["rungs"]]
    else:
        run_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_run_dir(p))
    if not run_dirs:
        raise UserError(
            f"{path}: no runs here (no leaderboard.json and no rung folders with a metrics.json). Pass a ladder "
            "output folder written by `adaptlab compare`, e.g. runs/rotten_tomatoes."
        )
    first_info, _ = _read_json(run_dirs[0] / "run.json")
    ladder = str((board or {}).get("ladder") or (first_info or {}).get("ladder") or ladder_dir.name)
    runs = [r for r in (_load_run(d, ladder, board, warn) for d in run_dirs) if r is not None]
    if not runs:
        raise UserError(
            f"{path}: none of its {len(run_dirs)} run(s) could be read (see the warnings above); nothing to report."
        )
    never_ran = [] if single else _never_ran(ladder_dir, runs)
    if never_ran:
        warn(f"{ladder_dir}: {len(never_ran)} rung(s) of the ladder never ran ({', '.join(never_ran)}): they have "
             f"no results, so the comparison and the recommendation cover only the {len(runs)} rung(s) that did. "
             "Run them with `adaptlab compare CONFIG --resume`.")
    return Source(ladder_dir, ladder, board, runs, never_ran)


def _never_ran(ladder_dir: Path, runs: list[Run]) -> list[str]:
    """Rungs named in ladder.json (written when `compare` starts) that have no results folder."""
    spec, _ = _read_json(ladder_dir / "ladder.json")
    rungs = spec.get("rungs") if isinstance(spec, dict) else None
    if not isinstance(rungs, list):
        return []
    names = [str(r.get("name") or r.get("method")) for r in rungs if isinstance(r, dict)]
    have = {r.rung for r in runs} | {r.path.name for r in runs}
    return [n for n in names if n not in have and not (ladder_dir / n / "metrics.json").exists()]


def load_sources(dirs: list[Path], warn: Warn) -> list[Source]:
    """Read every folder; rung folders of the same ladder merge; names get a ladder prefix when ladders differ."""
    if not dirs:
        raise UserError("no folders given: pass one or more ladder output folders, e.g. runs/rotten_tomatoes.")
    merged: dict[Path, Source] = {}
    for d in dirs:
        src = load_source(Path(d), warn)
        key = src.path.resolve()
        if key not in merged:
            merged[key] = src
            continue
        seen = {r.path.resolve() for r in merged[key].runs}
        merged[key].runs.extend(r for r in src.runs if r.path.resolve() not in seen)
    sources = list(merged.values())
    if len(sources) > 1:
        names = [s.ladder for s in sources]
        for s in sources:
            prefix = s.ladder if names.count(s.ladder) == 1 else f"{s.ladder}@{s.path}"
            for r in s.runs:
                r.ladder = prefix
                r.name = f"{prefix}/{r.rung}"
    return sources


def check_compatible(runs: list[Run]) -> None:
    """Refuse runs of different tasks, primary metrics or data splits in one report, naming both sides."""
    checks = (
        ("task", "tasks", lambda r: r.task, "A report compares rungs of one task."),
        ("primary_metric", "primary metrics", lambda r: r.primary_metric, "Rungs are ranked by one primary metric."),
        (
            "data_sha256", "data splits (data_sha256, the hash of the train/validation/test split)",
            lambda r: r.data_sha256,
            "Rungs are compared on the same test examples: the same data, split sizes and seed give the same hash. "
            "Report them separately, or re-run one ladder with the other's data and split settings.",
        ),
    )
    for _field, what, get, why in checks:
        groups: dict[str, list[str]] = {}
        for r in runs:
            groups.setdefault(str(get(r) or "unknown"), []).append(r.name)
        if len(groups) > 1:
            lines = "\n".join(f"  - {value}: {', '.join(names)}" for value, names in groups.items())
            raise UserError(
                f"cannot put these runs in one report: they have different {what}:\n{lines}\n{why}"
            )


def _predictions(run: Run, warn: Warn) -> list[dict] | None:
    if run.predictions is None and run.status == "ok":
        path = run.path / "predictions.jsonl"
        try:
            run.predictions = read_jsonl(path)
        except FileNotFoundError:
            warn(f"{run.name}: {path} is missing; no paired test or examples for this run.")
            run.predictions = []
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            warn(f"{run.name}: {path} is corrupted ({exc}); no paired test or examples for this run.")
            run.predictions = []
    return run.predictions or None


# ------------------------------------------------------------------------------------------------ significance


def is_classification(task: str | None, records: list[dict] | None) -> bool:
    if task == "classification":
        return True
    return bool(records) and isinstance(records[0].get("scores"), dict)


def is_generative(records: list[dict] | None) -> bool:
    """Records with a text prediction and no class scores."""
    return bool(records) and "scores" not in records[0] and isinstance(records[0].get("prediction"), str)


def _key(r: dict, line: int) -> str:
    """A record's example id (its line number when it has none)."""
    return str(r["id"]) if r.get("id") is not None else f"line {line}"


def _pair(best: list[dict], other: list[dict]) -> tuple[list[dict], list[dict]]:
    by_id = {_key(r, i): r for i, r in enumerate(other)}
    keys = [_key(r, i) for i, r in enumerate(best)]
    pairs = [(r, by_id[k]) for r, k in zip(best, keys, strict=True) if k in by_id]
    return [a for a, _ in pairs], [b for _, b in pairs]


def per_example_scores(records: list[dict], metric: str) -> list[float] | None:
    """Per-example values of ``metric`` for a paired bootstrap, or None when the metric has none.

    A record may carry them itself (``{"metrics": {metric: value}}``); otherwise ROUGE and exact match are
    computed from ``prediction`` and ``reference``.
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


def _corpus_metric(metric: str) -> Callable | None:
    from adaptlab.evaluation import metrics as M

    return {"bleu": M.bleu, "chrf": M.chrf}.get(metric)


def paired_test(best: Run, run: Run, metric: str, task: str | None, warn: Warn) -> dict:
    """The paired significance test of ``run`` against ``best`` on their common test examples."""
    from adaptlab.evaluation import stats

    a, b = _predictions(best, warn), _predictions(run, warn)
    if not a or not b:
        return {"method": None, "p_value": None, "n": 0, "detail": "no predictions to pair"}
    a, b = _pair(a, b)
    if not a:
        return {"method": None, "p_value": None, "n": 0, "detail": "no common example ids"}
    n = len(a)
    note = "" if n == len(best.predictions or []) == len(run.predictions or []) else f" on {n} common examples"
    if is_classification(task, a):
        correct_best = [r.get("prediction") == r.get("reference") for r in a]
        correct_run = [r.get("prediction") == r.get("reference") for r in b]
        res = stats.mcnemar(correct_best, correct_run)
        return {
            "method": f"McNemar ({res['method']})", "p_value": res["p_value"], "n": n, "b": res["b"], "c": res["c"],
            "detail": f"only the best right on {res['b']}, only this rung right on {res['c']}{note}",
        }
    scores_best, scores_run = per_example_scores(a, metric), per_example_scores(b, metric)
    if scores_best is not None and scores_run is not None:
        p = stats.paired_bootstrap_pvalue(scores_best, scores_run, n_resamples=N_RESAMPLES, seed=SEED)
        diff = sum(scores_run) / n - sum(scores_best) / n
        return {"method": "paired bootstrap (per-example mean)", "p_value": p, "n": n,
                "detail": f"mean difference {diff:+.4g}{note}"}
    corpus = _corpus_metric(metric)
    if corpus is not None and all(isinstance(r.get("reference"), str) for r in a):
        refs = [r["reference"] for r in a]
        pa, pb = [str(r.get("prediction")) for r in a], [str(r.get("prediction")) for r in b]

        def stat(idx: Any) -> tuple[float, float]:
            sub = [refs[i] for i in idx]
            return corpus([pa[i] for i in idx], sub), corpus([pb[i] for i in idx], sub)

        p = stats.paired_bootstrap_metric(stat, n, n_resamples=N_RESAMPLES, seed=SEED)
        return {"method": f"paired bootstrap ({metric})", "p_value": p, "n": n, "detail": f"corpus {metric}{note}"}
    return {"method": None, "p_value": None, "n": n, "detail": f"no per-example {metric} to pair"}


# -------------------------------------------------------------------------------------------------- the report


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
    kind: str  # "classification", "generative" or "other"
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


def _higher_is_better(runs: list[Run], metric: str) -> bool:
    for r in runs:
        if isinstance(r.metrics.get("higher_is_better"), bool):
            return r.metrics["higher_is_better"]
        if r.board and isinstance(r.board.get("higher_is_better"), bool):
            return r.board["higher_is_better"]
    from adaptlab.evaluation.metrics import METRICS, higher_is_better

    return higher_is_better(metric) if metric in METRICS.names() else True


def _test_n(runs: list[Run]) -> int | None:
    for r in runs:
        n = ((r.board or {}).get("split") or {}).get("test") or r.metrics.get("n")
        if isinstance(n, int):
            return n
    return None


def _interval(run: Run) -> tuple[float, float] | None:
    iv = run.metrics.get("interval")
    if isinstance(iv, (list, tuple)) and len(iv) == 2 and all(isinstance(x, (int, float)) for x in iv):
        return float(iv[0]), float(iv[1])
    return None


def build_report(dirs: list[Path], warn: Warn) -> Report:
    """Read, check and analyse the runs in ``dirs``; nothing is written."""
    sources = load_sources(dirs, warn)
    runs = [r for s in sources for r in s.runs]
    check_compatible(runs)
    task = str(runs[0].task or "unknown")
    metric = str(runs[0].primary_metric or "value")
    hib = _higher_is_better(runs, metric)
    ok = sorted((r for r in runs if is_usable(r.entry())), key=lambda r: quality_key(r.entry(), hib))
    runs = ok + [r for r in runs if not is_usable(r.entry())]
    colours = {r.name: i for i, r in enumerate(runs)}
    best_e = best_entry([r.entry() for r in ok], hib)
    best = next((r for r in ok if r.name == best_e["rung"]), None) if best_e else None
    tests: dict[str, dict] = {}
    if best is not None:
        for r in ok:
            if r is not best:
                tests[r.name] = paired_test(best, r, metric, task, warn)
    rec = recommend([r.entry() for r in runs], {k: t.get("p_value") for k, t in tests.items()},
                    higher_is_better=hib, metric=metric)
    never_ran = [n if len(sources) == 1 else f"{s.ladder}/{n}" for s in sources for n in s.never_ran]
    if never_ran:
        rec = dataclasses.replace(rec, reason=f"{rec.reason} This is among the finished rungs only: "
                                  f"{', '.join(never_ran)} never ran (no results), so they could not be compared."
                                  .strip())
    group_index = {r.ladder: i for i, s in enumerate(sources) for r in s.runs}
    points = [
        C.Point(r.name, float(r.value), _interval(r), r.cost, colours[r.name], group_index.get(r.ladder, 0))
        for r in ok
    ]
    pareto = {
        name: pareto_front([(p.name, float(p.cost[name]), p.value) for p in points
                            if isinstance(p.cost.get(name), (int, float))], hib)
        for name, _, _ in C.COST_AXES
    }
    curves = C.learning_curves([(r.name, colours[r.name], r.metrics.get("history") or []) for r in ok])
    sample = next((p for p in (_predictions(r, warn) for r in ok) if p), None)
    kind = "classification" if is_classification(task, sample) else "generative" if is_generative(sample) else "other"
    title = (f"{sources[0].ladder}: {task} on {runs[0].model or 'unknown model'}" if len(sources) == 1
             else f"{' vs '.join(s.ladder for s in sources)}: {task}")
    return Report(title, sources, runs, task, metric, hib, _test_n(runs), tests, rec,
                  C.quality_cost_charts(points, metric, hib), curves, pareto, kind, colours, [])


# --------------------------------------------------------------------------------------- classification details


def confusion(run: Run) -> tuple[list[str], list[list[int]]] | None:
    """(labels, matrix[reference][prediction]) from metrics.json, else counted from the predictions."""
    labels, matrix = run.metrics.get("labels"), run.metrics.get("confusion_matrix")
    if isinstance(labels, list) and isinstance(matrix, list) and len(matrix) == len(labels):
        return [str(x) for x in labels], matrix
    records = run.predictions or []
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


def worst_errors(run: Run, k: int = WORST_ERRORS) -> list[dict]:
    """The ``k`` wrong predictions the rung was most confident in (probability of its predicted label)."""
    wrong = []
    for r in run.predictions or []:
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


def record_input(r: dict) -> str:
    for key in ("text", "prompt", "input", "source", "question"):
        if isinstance(r.get(key), str):
            pair = r.get("text_pair")
            return r[key] + (f" [SEP] {pair}" if isinstance(pair, str) else "")
    return ""


def side_by_side(report: Report, k: int = SIDE_BY_SIDE) -> tuple[list[str], list[dict]]:
    """(run names, rows): the first ``k`` test inputs all runs share, with each run's output."""
    runs = [r for r in report.ok_runs if r.predictions]
    if not runs:
        return [], []
    by_run = [{str(x.get("id")): x for x in r.predictions or []} for r in runs]
    rows = []
    for rec in runs[0].predictions or []:
        rid = str(rec.get("id"))
        if all(rid in m for m in by_run):
            rows.append({"id": rid, "input": record_input(rec), "reference": rec.get("reference"),
                         "outputs": [str(m[rid].get("prediction")) for m in by_run]})
        if len(rows) >= k:
            break
    return [r.name for r in runs], rows


# ------------------------------------------------------------------------------------------------- formatting


def fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool) or x is None:
        return "-" if x is None else str(x)
    if isinstance(x, (int, float)):
        return f"{x:.{digits}f}" if math.isfinite(x) else str(x)
    return str(x)


def fmt_interval(run: Run) -> str:
    iv = _interval(run)
    return f"{fmt(run.value)} [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else fmt(run.value)


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


# ------------------------------------------------------------------------------------------------- markdown


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def leaderboard_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["#", "rung", "method", f"{report.metric} [95% CI]", "vs best: test", "p", "trainable", "train s",
              "peak MB", "p50 ms", "size"]
    if report.has_forgetting:
        header.append("forgetting")
    rows = []
    for i, r in enumerate(report.runs, 1):
        if not is_usable(r.entry()):
            row = [str(i), r.name, str(r.metrics.get("method") or "-"), f"failed: {r.failure}",
                   "-", "-", *["-"] * 5]
        else:
            test, p = significance_text(report, r)
            value = fmt_interval(r) + (f" ⚠ {r.flag}" if r.flag else "")
            row = [str(i), r.name, str(r.metrics.get("method") or "-"), value, test, p, *cost_cells(r)]
        if report.has_forgetting:
            row.append(forgetting_text(r.metrics.get("forgetting")))
        rows.append(row)
    return header, rows


def render_markdown(report: Report) -> str:
    rec = report.recommendation
    direction = "higher is better" if report.higher_is_better else "lower is better"
    out = [f"# {report.title}", ""]
    out.append(
        f"Task **{report.task}**, primary metric **{report.metric}** ({direction}), test examples: "
        f"{report.test_n if report.test_n is not None else 'unknown'}; model(s): {', '.join(report.models()) or '-'}."
    )
    out += ["", "## Recommendation", ""]
    if rec.choice:
        out.append(f"**Ship `{rec.choice}`.** {rec.reason}")
        if rec.runner_up:
            out += ["", f"Runner-up: `{rec.runner_up}`. {rec.runner_up_reason}"]
    else:
        out.append(f"No recommendation: {rec.reason}")
    out += ["", f"_Rule: {rec.rule}_", "", "## Leaderboard", ""]
    header, rows = leaderboard_rows(report)
    out.append(_md_table(header, rows))
    out += [f"Baseline: {line}" for line in baseline_texts(report)]
    out += ["", "Significance: each rung against the best on the same test examples (paired by id): McNemar's test "
            "on per-example correctness for classification, a paired bootstrap otherwise.", ""]
    if report.ok_runs:
        out += ["## Quality against cost", "",
                "Pareto front (no other rung is both cheaper and better), per cost:", ""]
        for name, label, _ in C.COST_AXES:
            if report.pareto.get(name):
                out.append(f"- {label}: {', '.join(report.pareto[name])}")
        out += ["", "Charts (quality against each cost, learning curves) are in report.html.", ""]
    out += _md_details(report)
    out += ["## Provenance", "", _md_table(["run", *[label for _, label in PROVENANCE_KEYS]],
                                             [[r.name, *provenance_cells(r)] for r in report.runs]), ""]
    if report.warnings:
        out += ["## Warnings", "", *[f"- {w}" for w in report.warnings], ""]
    return "\n".join(out)


def _md_details(report: Report) -> list[str]:
    out: list[str] = []
    if report.kind == "classification":
        out += ["## Confusion matrices", "", "Rows: reference label; columns: predicted label.", ""]
        for r in report.ok_runs:
            cm = confusion(r)
            if cm:
                labels, matrix = cm
                rows = [[lab, *row] for lab, row in zip(labels, matrix, strict=False)]
                out += [f"### {r.name}", "", _md_table(["reference \\ predicted", *labels], rows), ""]
        out += ["## Worst errors", "", "The wrong predictions each rung was most confident in.", ""]
        for r in report.ok_runs:
            errs = worst_errors(r)
            if errs:
                out += [f"### {r.name}", "", _md_table(
                    ["id", "text", "reference", "predicted", "confidence"],
                    [[e["id"], _clip(e["text"]), e["reference"], e["prediction"], fmt(e["confidence"])]
                     for e in errs]), ""]
    elif report.kind == "generative":
        names, rows = side_by_side(report)
        if rows:
            out += ["## Outputs side by side", "", _md_table(
                ["id", "input", "reference", *names],
                [[row["id"], _clip(row["input"]), _clip(str(row["reference"])), *map(_clip, row["outputs"])]
                 for row in rows]), ""]
    flagged = diagnosed_runs(report)
    if flagged:
        out += ["## Rungs that learned nothing (or are doubted)", ""]
        out += [f"- `{r.name}` ({r.flag}): {why}" for r, why in flagged]
        out.append("")
    failed = [r for r in report.runs if not is_usable(r.entry())]
    if failed:
        out += ["## Failed rungs", ""]
        out += [f"- `{r.name}`: {r.failure} ({r.path / 'error.log'})"
                for r in failed]
        out.append("")
    return out


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


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------------------------------------- terminal


def terminal_board(report: Report) -> dict:
    """A leaderboard dict in the shape :func:`adaptlab.reporting.table.leaderboard_table` prints."""
    return {
        "ladder": " vs ".join(s.ladder for s in report.sources),
        "task": report.task,
        "model": ", ".join(report.models()) or "-",
        "primary_metric": report.metric,
        "split": {"test": report.test_n if report.test_n is not None else "?"},
        "rungs": [r.entry() for r in report.runs],
    }


def write_report(dirs: list[Path], output: Path, quiet: bool = False) -> list[Path]:
    """Write ``output/report.md`` and ``output/report.html`` for the runs in ``dirs``; returns their paths.

    Prints the terminal leaderboard and the recommendation unless ``quiet``; warnings (skipped runs) always go
    to stderr and into the report. Raises UserError for input that cannot make a truthful report.
    """
    from rich.console import Console

    from adaptlab.reporting.html import render_html
    from adaptlab.reporting.table import diagnosis_lines, leaderboard_table

    err = Console(stderr=True)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    report = build_report([Path(d) for d in dirs], warn)
    report.warnings = warnings
    markdown = render_markdown(report)
    page = render_html(report)
    output = Path(output)
    paths = [output / "report.md", output / "report.html"]
    write_text_atomic(paths[0], markdown)
    write_text_atomic(paths[1], page)
    if not quiet:
        console = Console()
        board = terminal_board(report)
        console.print(leaderboard_table(board))
        for line in diagnosis_lines(board):
            console.print(line, soft_wrap=True, highlight=False)
        rec = report.recommendation
        if rec.choice:
            console.print(f"[bold]recommended:[/bold] {rec.choice}. {rec.reason}", highlight=False)
            if rec.runner_up:
                console.print(f"runner-up: {rec.runner_up}. {rec.runner_up_reason}", highlight=False)
        else:
            console.print(f"[bold]no recommendation:[/bold] {rec.reason}", highlight=False)
    return paths
