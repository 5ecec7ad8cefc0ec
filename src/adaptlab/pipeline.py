"""The ladder, top to bottom: data -> task -> method -> train -> evaluate -> save -> leaderboard.

    ladder = prepare(load_ladder("examples/rotten_tomatoes.yaml"))
    board = compare(ladder)            # every rung on the same split; writes <output>/leaderboard.json

Each rung is built in ``<output>/.partial/<rung>/`` and published to ``<output>/<rung>/`` only when complete
(or, if it failed, with its error), so nothing half-written looks finished. A failing rung is recorded and the
ladder goes on. Its result is a :class:`~adaptlab.runs.result.RungResult`, written to ``metrics.json`` (and its
entry to ``leaderboard.json``).

Rungs run in the order of the config. A rung with ``from: <rung>`` starts from that earlier rung's finished folder
(``<output>/<rung>``, see :meth:`Method.start_from`; lm_full supports it): its run.json records the dependency
(``from``), its provenance ``from_rung``/``from_rung_sha256``, and its resume hash includes the parent's, so
re-running the parent with other settings invalidates it. A parent that failed or is missing fails the child.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.config import LadderSpec, RungSpec, rung_params
from adaptlab.context import RunContext
from adaptlab.cost import cost_summary, dir_size, latency_ms, measure
from adaptlab.errors import UserError
from adaptlab.evaluation.metrics import higher_is_better
from adaptlab.methods import METHODS, Method
from adaptlab.runs import registry
from adaptlab.runs.files import (
    OutputLock,
    check_output_folder,
    partial_dir,
    publish,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)
from adaptlab.runs.provenance import provenance
from adaptlab.runs.result import RungResult
from adaptlab.tasks import get_task
from adaptlab.training import STEP_REPORTER

Progress = Callable[[str, str], None]


@dataclass
class Ladder:
    """A prepared ladder: the split, the task data and the context every rung shares."""

    spec: LadderSpec
    task: Any
    data: Any
    ctx: RunContext
    output: Path
    data_hash: str
    config_hash: str


def config_hash(spec: LadderSpec) -> str:
    return hashlib.sha256(spec.model_dump_json(exclude={"base_dir", "output_dir"}).encode()).hexdigest()


def rung_hash(ladder: Ladder, rung: RungSpec, _below: tuple[str, ...] = ()) -> str:
    """What a finished rung's result depends on: data, model, task, seed and its own (validated) params, and for a
    rung with ``from`` the hash of the rung it starts from (so other settings there invalidate this one too)."""
    params = rung_params(rung).model_dump(mode="json")
    key: dict[str, Any] = {
        "data": ladder.data_hash, "model": ladder.ctx.model.sha256, "method": rung.method, "params": params,
        "task": ladder.spec.task.model_dump(mode="json"), "seed": ladder.spec.seed,
        "max_length": ladder.spec.data.max_length,
    }
    if rung.from_ is not None:  # only then: the hashes of rungs without `from` stay what they always were
        if rung.from_ in (*_below, rung.run_name):  # parse_ladder reports cycles; a spec built in code may have one
            raise UserError(f"rung '{rung.run_name}' starts from '{rung.from_}', which starts from it: a cycle.")
        key["from"] = rung_hash(ladder, ladder.spec.rung(rung.from_), (*_below, rung.run_name))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def parent_record(ladder: Ladder, rung: RungSpec, inputs: Path) -> dict[str, str] | None:
    """run.json's ``from`` for a rung with ``from``: the rung it starts from, the hash that rung must have been run
    with, and its folder in ``inputs`` (the ladder's output). None for a rung that starts from the base model."""
    if rung.from_ is None:
        return None
    parent = ladder.spec.rung(rung.from_)
    return {"rung": parent.run_name, "rung_sha256": rung_hash(ladder, parent), "dir": str(inputs / parent.run_name)}


def prepare(spec: LadderSpec, output: Path | None = None) -> Ladder:
    """Load and split the data once, resolve the base model, build the shared context."""
    from adaptlab.data.source import load_frames

    check_output_folder(output or spec.output_path())
    check_device(spec.device)
    task = get_task(spec.task.type)
    frames = load_frames(spec, task.stratify_role)
    data = task.prepare(spec, frames)
    ctx = RunContext(
        model_spec=spec.model,
        task=spec.task.type,
        label_names=data.meta().get("label_names", []),
        label_descriptions=data.meta().get("label_descriptions", {}),
        max_length=spec.data.max_length,
        seed=spec.seed,
        device=spec.device,
        trust_remote_code=spec.trust_remote_code,
        allow_pickle=spec.allow_pickle,
        extra={"task": spec.task.model_dump(mode="json"), "base_dir": str(spec.base_dir.resolve())},
    )
    _ = ctx.model  # resolve now: an unknown model is a user error before any rung starts
    check_rungs(spec, ctx, data)
    return Ladder(spec, task, data, ctx, output or spec.output_path(), task.fingerprint(data), config_hash(spec))


def check_rungs(spec: LadderSpec, ctx: RunContext, data: Any) -> None:
    """Before any rung starts: each method's optional ``check(params, ctx, data) -> [problems]`` (e.g. a generative
    rung on an encoder-only model, a prompt that cannot fit the context window). All problems raise together."""
    problems = []
    for i, rung in enumerate(spec.rungs):
        found = METHODS.get(rung.method).check(rung_params(rung), ctx, data)
        problems += [f"rungs[{i}] ({rung.run_name}): {p}" for p in found]
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise UserError(f"ladder '{spec.name}': {len(problems)} rung(s) cannot run on this model and data:\n{lines}")


def check_device(device: str) -> None:
    """UserError when the configured device is not on this machine (before any rung starts, not in every rung)."""
    if device in ("auto", "cpu"):
        return
    import torch

    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError("device: 'mps' asks for an Apple GPU, but torch sees none on this machine. Set device: "
                            "auto (a GPU when there is one) or cpu in the config.")
        return
    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise UserError(f"device: '{device}' asks for a CUDA GPU, but {why} on this machine. Set device: auto "
                        "(a GPU when there is one) or cpu in the config.")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"device: '{device}' asks for GPU {index}, but this machine has "
                        f"{torch.cuda.device_count()} (cuda:0 to cuda:{torch.cuda.device_count() - 1}).")


def build_method(rung: RungSpec, ctx: RunContext) -> Method:
    return METHODS.get(rung.method)(rung_params(rung), ctx)




@dataclass
class RungRun:
    """One rung being run: where it is staged, its run.json record, and how it reports progress."""

    ladder: Ladder
    rung: RungSpec
    staging: Path
    info: dict
    say: Callable[[str], None]

    def write_info(self, **extra: Any) -> None:
        self.info.update(extra)
        write_json_atomic(self.staging / "run.json", self.info)


def run_rung(
    ladder: Ladder, rung: RungSpec, *, resume: bool = False, progress: Progress | None = None, record: bool = True,
    inputs: Path | None = None,
) -> dict:
    """Fit, evaluate, measure and save one rung; returns its leaderboard entry. Never raises for a failing rung.

    A rung with ``from`` starts from that rung's folder in ``inputs`` (default: the ladder's output folder)."""
    parent = parent_record(ladder, rung, inputs or ladder.output)
    run = _stage(ladder, rung, resume, progress, parent)
    base = _unfinished(run, parent)
    method: Method | None = None
    try:
        method = build_method(rung, ladder.ctx)
        if parent is not None:
            _start_from(run, method, parent)  # before setup(), which loads the weights
        fit, meter = _fit(run, method, resume)
        evaluation = _evaluate(run, method, fit)
        cost = _measure(run, method, fit, meter)
        result = _results(run, base, evaluation, cost, fit)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failing rung is recorded; the ladder goes on
        detail = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        (run.staging / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        shutil.rmtree(run.staging / "checkpoints", ignore_errors=True)
        result = base.model_copy(update={"error": detail})
    if method is not None and method.adjustments:  # settings used in place of the configured ones (warned about)
        run.write_info(adjustments=method.adjustments)
    write_json_atomic(run.staging / "metrics.json", result.model_dump())
    final = ladder.output / rung.run_name
    publish(run.staging, final)
    entry = result.entry()
    if record:
        registry.record(entry, ladder.spec.name, ladder.spec.task.type, ladder.spec.model, final)
    run.say(result.status)
    return entry


def _stage(ladder: Ladder, rung: RungSpec, resume: bool, progress: Progress | None,
           parent: dict[str, str] | None) -> RungRun:
    """The rung's staging folder, kept for --resume only when it was staged with the same settings, and its
    run.json (with the rung it starts from, if any)."""
    name = rung.run_name
    staging = partial_dir(ladder.output, name)
    digest = rung_hash(ladder, rung)
    if not resume or _staged_hash(staging) != digest:  # never resume from a checkpoint of other settings
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    ladder.ctx.reset_caches()
    info = {
        "ladder": ladder.spec.name, "rung": rung.model_dump(mode="json"),
        "params": rung_params(rung).model_dump(mode="json"), "task": ladder.spec.task.model_dump(mode="json"),
        "data": ladder.spec.data.model_dump(mode="json"), "context": ladder.ctx.to_dict(), "rung_sha256": digest,
    }
    if parent is not None:
        info["from"] = parent
    run = RungRun(ladder, rung, staging, info, lambda stage: (progress or (lambda _r, _s: None))(name, stage))
    run.write_info()
    return run


def _unfinished(run: RungRun, parent: dict[str, str] | None) -> RungResult:
    """The rung's result until it has one: failed, without metrics, with its provenance (which names the rung it
    starts from, if any). A finished rung fills it in (:func:`_results`); a failing one adds its error."""
    ladder = run.ladder
    prov = provenance(
        model=ladder.ctx.model, data_hash=ladder.data_hash, seed=ladder.spec.seed, config_hash=ladder.config_hash,
        trust_remote_code=ladder.spec.trust_remote_code,
    )
    if parent is not None:
        prov.update(from_rung=parent["rung"], from_rung_sha256=parent["rung_sha256"])
    name, primary = run.rung.run_name, ladder.task.primary_metric
    return RungResult(rung=name, method=run.rung.method, dir=name, primary_metric=primary, status="failed",
                      task=ladder.spec.task.type, higher_is_better=higher_is_better(primary), provenance=prov)


def _start_from(run: RungRun, method: Method, parent: dict[str, str]) -> None:
    """Hand the method the folder of the rung it starts from, once that rung is known to have finished ``ok`` with
    the settings the ladder has now; a UserError (which fails this rung) naming the parent otherwise."""
    folder, name = Path(parent["dir"]), parent["rung"]
    run.say(f"starting from {name}")
    try:
        result = RungResult.model_validate(json.loads((folder / "metrics.json").read_text(encoding="utf-8")))
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except OSError:
        raise UserError(f"starts from rung '{name}', which has no finished output in {folder}; run it first "
                        f"(adaptlab compare CONFIG --rungs {name},{run.rung.run_name}).") from None
    except ValueError as exc:  # corrupted JSON, or not a rung's metrics.json
        raise UserError(f"starts from rung '{name}', whose results in {folder} can't be read ({exc}); re-run "
                        f"it (adaptlab compare CONFIG --rungs {name},{run.rung.run_name}).") from None
    if not result.ok:
        raise UserError(f"starts from rung '{name}', which failed ({result.error}); fix and re-run '{name}' first.")
    if info.get("rung_sha256") != parent["rung_sha256"]:
        raise UserError(f"starts from rung '{name}', but {folder} was run with other settings than '{name}' has now "
                        f"(data, model, task or params changed); re-run '{name}' first.")
    method.start_from(folder, info)


def _fit(run: RungRun, method: Method, resume: bool) -> tuple[dict, Any]:
    """Load the base and fit, metered (time, peak memory); run.json records what training actually did."""
    run.say("loading")
    with measure() as meter:
        method.setup()
        run.say("training")
        token = STEP_REPORTER.set(lambda step, total, loss: run.say(_step_text(step, total, loss)))
        try:
            fit = method.fit(run.ladder.data, run.staging, resume=resume)
        finally:
            STEP_REPORTER.reset(token)
    training = training_record(fit)
    if training:  # epochs derived from the data size, class weights
        run.write_info(training=training)
    return fit, meter


def _evaluate(run: RungRun, method: Method, fit: dict) -> dict:
    """Predict the test split, write the predictions, score them; the task's diagnosis says if the rung learned."""
    ladder = run.ladder
    run.say("evaluating")
    records = ladder.task.predict(method, ladder.data.test)
    write_jsonl_atomic(run.staging / "predictions.jsonl", records)
    evaluation = ladder.task.evaluate(records, {**ladder.data.meta(), "seed": ladder.spec.seed})
    extra = method.extra_metrics()  # e.g. forgetting
    return {**evaluation, **extra, "metrics": {**evaluation["metrics"], **extra},
            "diagnosis": ladder.task.diagnose(records, fit, ladder.data)}


def _measure(run: RungRun, method: Method, fit: dict, meter: Any) -> dict:
    """Latency of one example at a time, then save what ships and account its cost."""
    task, test = run.ladder.task, run.ladder.data.test
    run.say("measuring latency")
    with method.uncached():
        latency = latency_ms(lambda i: task.predict_one(method, test, i), min(task.latency_examples, len(test)))
    run.say("saving")
    method.save(run.staging / "weights")
    trainable, total = method.parameter_counts()
    shutil.rmtree(run.staging / "checkpoints", ignore_errors=True)
    return cost_summary(
        trainable=trainable, total=total, meter=meter, samples=fit.get("samples", 0), tokens=fit.get("tokens"),
        size_bytes=dir_size(run.staging / "weights"), latency=latency,
    )


def _results(run: RungRun, base: RungResult, evaluation: dict, cost: dict, fit: dict) -> RungResult:
    """A finished rung's result: ``base`` with its metrics, cost and training record; what the task's evaluate
    returned beyond metrics and intervals goes into ``details`` (top-level keys of metrics.json)."""
    primary = run.ladder.task.primary_metric
    return RungResult(**{
        **dict(base), "status": "ok", "value": evaluation["metrics"][primary],
        "interval": evaluation["interval"].get(primary), "metrics": evaluation["metrics"], "cost": cost,
        "error": None, "diagnosis": evaluation["diagnosis"], "intervals": evaluation["interval"],
        "history": fit.get("history", []), "resumed_from": fit.get("resumed_from"),
        "training": run.info.get("training", {}),
        "details": {k: v for k, v in evaluation.items() if k not in ("metrics", "interval", "diagnosis")},
    })


def training_record(fit: dict) -> dict:
    """The resolved training settings a fit reports (schedule, class weights); empty for rungs that don't train."""
    return {k: fit[k] for k in ("schedule", "class_weights") if fit.get(k) is not None}


def _staged_hash(staging: Path) -> str | None:
    try:
        return json.loads((staging / "run.json").read_text(encoding="utf-8")).get("rung_sha256")
    except (OSError, ValueError):
        return None


def _step_text(step: int, total: int, loss: float | None) -> str:
    return f"training step {step}/{total}" + (f", loss {loss:.4f}" if loss is not None else "")


def finished_entry(ladder: Ladder, rung: RungSpec) -> dict | None:
    """The leaderboard entry of a rung already finished with the same inputs, for --resume."""
    folder = ladder.output / rung.run_name
    try:
        result = RungResult.model_validate(json.loads((folder / "metrics.json").read_text(encoding="utf-8")))
        run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, corrupted, or not a rung's result (pydantic's errors are ValueErrors)
        return None
    if not result.ok or run.get("rung_sha256") != rung_hash(ladder, rung):
        return None
    return result.entry()


def rank(entries: list[dict], metric_higher_is_better: bool = True) -> list[dict]:
    ok = [e for e in entries if e["status"] == "ok"]
    failed = [e for e in entries if e["status"] != "ok"]
    ok.sort(key=lambda e: e["value"], reverse=metric_higher_is_better)
    return ok + failed


def write_leaderboard(ladder: Ladder, entries: list[dict]) -> dict:
    primary = ladder.task.primary_metric
    board = {
        "ladder": ladder.spec.name,
        "task": ladder.spec.task.type,
        "model": ladder.spec.model,
        "primary_metric": primary,
        "higher_is_better": higher_is_better(primary),
        "data_sha256": ladder.data_hash,
        "split": {"train": len(ladder.data.train), "validation": len(ladder.data.validation),
                  "test": len(ladder.data.test), "seed": ladder.spec.seed},
        "rungs": rank(entries, higher_is_better(primary)),
        "baselines": ladder.task.baselines(ladder.data, ladder.spec.seed),
    }
    write_json_atomic(ladder.output / "leaderboard.json", board)
    return board


def compare(
    ladder: Ladder, *, resume: bool = False, only: list[str] | None = None, progress: Progress | None = None
) -> dict:
    """Run every rung (or those named in ``only``) on the ladder's split, in the config's order (a rung with
    ``from`` after the rung it starts from); returns the leaderboard."""
    wanted = {ladder.spec.rung(n).run_name for n in only} if only else None
    rungs = [r for r in ladder.spec.rungs if wanted is None or r.run_name in wanted]
    with OutputLock(ladder.output):
        write_json_atomic(ladder.output / "ladder.json", ladder.spec.model_dump(mode="json", exclude={"base_dir"}))
        entries: dict[str, dict] = {}
        for rung in ladder.spec.rungs:  # keep earlier results of rungs not being re-run
            if rung not in rungs:
                previous = finished_entry(ladder, rung)
                if previous:
                    entries[rung.run_name] = previous
        for rung in rungs:
            previous = finished_entry(ladder, rung) if resume else None
            if previous:
                if progress:
                    progress(rung.run_name, "already finished (resume)")
                entries[rung.run_name] = previous
            else:
                entries[rung.run_name] = run_rung(ladder, rung, resume=resume, progress=progress)
            write_leaderboard(ladder, list(entries.values()))
        shutil.rmtree(ladder.output / ".partial", ignore_errors=True)
        return write_leaderboard(ladder, list(entries.values()))


def check_repro(ladder: Ladder, rung_name: str, scratch: Path) -> dict:
    """Re-run a finished rung into ``scratch`` and diff its predictions and metrics with the recorded run."""
    rung = ladder.spec.rung(rung_name)
    recorded = ladder.output / rung_name
    if not (recorded / "metrics.json").is_file():
        raise UserError(f"{recorded}: no finished run to check; run `adaptlab compare` first.")
    again = Ladder(**{**ladder.__dict__, "output": scratch})
    # a scratch re-run is not a run to list; a rung with `from` starts from the recorded parent, as it did
    run_rung(again, rung, record=False, inputs=ladder.output)
    differences = []
    old_m = json.loads((recorded / "metrics.json").read_text(encoding="utf-8"))
    new_m = json.loads((scratch / rung_name / "metrics.json").read_text(encoding="utf-8"))
    for key in ("status", "metrics", "intervals", "per_class", "confusion_matrix"):
        if old_m.get(key) != new_m.get(key):
            differences.append(f"metrics.json `{key}`: recorded {old_m.get(key)} vs now {new_m.get(key)}")
    for label, (a, b) in {
        "provenance.data_sha256": (old_m["provenance"]["data_sha256"], new_m["provenance"]["data_sha256"]),
        "provenance.model_sha256": (old_m["provenance"]["model_sha256"], new_m["provenance"]["model_sha256"]),
        "provenance.packages": (old_m["provenance"]["packages"], new_m["provenance"]["packages"]),
    }.items():
        if a != b:
            differences.append(f"{label}: recorded {a} vs now {b}")
    if (recorded / "predictions.jsonl").is_file() and (scratch / rung_name / "predictions.jsonl").is_file():
        old_p, new_p = read_predictions(recorded), read_predictions(scratch / rung_name)
        changed = [o["id"] for o, n in zip(old_p, new_p) if o != n]
        if changed or len(old_p) != len(new_p):
            n = len(old_p)
            differences.append(f"predictions differ on {len(changed)} of {n} examples, e.g. ids {changed[:5]}")
    return {"rung": rung_name, "identical": not differences, "differences": differences}


def load_run(run_dir: Path) -> tuple[Any, Method, dict]:
    """Rebuild a finished rung from its folder: (task, method ready to predict, run.json)."""
    run_dir = Path(run_dir)
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise UserError(f"{run_dir}: not a run folder (no run.json). Pass <output>/<rung>, e.g. runs/<ladder>/lora.")
    info = json.loads(run_file.read_text(encoding="utf-8"))
    metrics_file = run_dir / "metrics.json"
    status = json.loads(metrics_file.read_text(encoding="utf-8")).get("status") if metrics_file.is_file() else None
    if status != "ok":
        raise UserError(f"{run_dir}: this rung did not finish successfully (status: {status}); nothing to load.")
    ctx = RunContext.from_dict(info["context"])
    method_cls = METHODS.get(info["rung"]["method"])
    method = method_cls.load(run_dir / "weights", method_cls.Params.model_validate(info["params"]), ctx)
    return get_task(info["context"]["task"]), method, info


def read_predictions(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "predictions.jsonl")
