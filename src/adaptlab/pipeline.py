"""The ladder, top to bottom: data -> task -> method -> train -> evaluate -> save -> leaderboard.

    ladder = prepare(load_ladder("examples/rotten_tomatoes.yaml"))
    board = compare(ladder)            # every rung on the same split; writes <output>/leaderboard.json

Each rung is built in ``<output>/.partial/<rung>/`` and published to ``<output>/<rung>/`` only when complete
(or, if it failed, with its error), so nothing half-written looks finished. A failing rung is recorded and the
ladder goes on. Its result is a :class:`~adaptlab.runs.result.RungResult`, written to ``metrics.json`` (and its
entry to ``leaderboard.json``).

Rungs run in the order of the config. A rung with ``from: <rung>`` starts from that earlier rung's finished folder
(``<output>/<rung>``, see :meth:`Method.start_from`; lm_full, and the encoder rungs from a domain_mlm rung): its
run.json records the dependency (``from``), its provenance ``from_rung``/``from_rung_sha256``, its cost includes
the parent's training time (:func:`with_parent_cost`), and its resume hash includes the parent's, so re-running the
parent with other settings invalidates it. A parent that failed or is missing fails the child. A rung that predicts
nothing (``Method.predicts`` False: domain_mlm, a pre-training stage) records only its own metrics and no value.

With ``train_sizes:`` each rung on the curve is re-run on nested, seeded subsets of the training split (examples
per class when the task stratifies by a label), into ``<output>/train_sizes/n-<size>/seed-<seed>/<rung>``; its
metrics.json records the curve (``train_sizes``, see :func:`run_configured`). Rungs that don't train are flat
references.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab import bundle, distributed
from adaptlab.config import LadderSpec, RungSpec, rung_params
from adaptlab.context import RunContext
from adaptlab.cost import cost_summary, dir_size, latency_ms, measure, release_memory
from adaptlab.errors import UserError, did_you_mean
from adaptlab.evaluation.metrics import higher_is_better
from adaptlab.generation import lm
from adaptlab.judging import BEST, PAIRWISE_METRICS, JudgeSite
from adaptlab.methods import METHODS, Method
from adaptlab.runs import registry
from adaptlab.runs.files import (
    OutputLock,
    changed_files,
    check_output_folder,
    check_rung_folders,
    file_sizes,
    partial_dir,
    publish,
    read_run_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)
from adaptlab.runs.loading import load_run
from adaptlab.runs.provenance import provenance
from adaptlab.runs.result import RungResult
from adaptlab.runtime import RUNTIME, Machine, Runtime, cpu_kernels, resolve
from adaptlab.tasks import get_task
from adaptlab.training import FINISHED_RUNS, STEP_REPORTER, VALIDATION_SCORER, TrainParams, ValidationScorer

log = logging.getLogger(__name__)

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
    #: Held-out examples whose input also occurs in the training split (:func:`adaptlab.data.overlap.split_overlap`)
    overlap: dict = dataclasses.field(default_factory=dict)
    #: The ladder this one re-runs rungs of (another training seed, the default settings of a tuned rung): where the
    #: searches are recorded and with which seed they were made. None for the ladder itself.
    primary: Ladder | None = None

    @property
    def root(self) -> Ladder:
        return self.primary or self


def config_hash(spec: LadderSpec) -> str:
    """The config's digest; a ladder without a runtime section hashes as before the section existed."""
    exclude = {"base_dir", "output_dir"} | ({"runtime"} if not spec.runtime.model_fields_set else set())
    return hashlib.sha256(spec.model_dump_json(exclude=exclude).encode()).hexdigest()


def rung_hash(ladder: Ladder, rung: RungSpec, _below: tuple[str, ...] = (), checkpoint: bool = False) -> str:
    """What a finished rung's result depends on: data, model, task, seed and its own (validated) params, and for a
    rung with ``from`` the hash of the rung it starts from (so other settings there invalidate this one too).
    ``checkpoint``: what its training checkpoints depend on (runtime settings such as gradient checkpointing left
    out: a staged rung resumes under another value of them)."""
    validated = rung_params(rung)
    params = validated.model_dump(mode="json")
    resolved = rung_runtime(ladder, rung)
    runtime = resolved.changed(checkpoint)
    if isinstance(validated, TrainParams):  # where precision was before the runtime section: hashes stay as they were
        # (it only ever took effect on a GPU: mixed precision on CPU is new and hashes as a runtime setting)
        on_gpu = resolved.device.startswith("cuda")
        params["precision"] = runtime.pop("precision", "fp32") if on_gpu else "fp32"
    key: dict[str, Any] = {
        "data": ladder.data_hash, "model": ladder.ctx.model.sha256, "method": rung.method, "params": params,
        "task": ladder.spec.task.model_dump(mode="json"), "seed": ladder.spec.seed,
        "max_length": ladder.spec.data.max_length,
    }
    method = METHODS.get(rung.method)
    if ladder.ctx.seed != ladder.spec.seed and method.trains:  # `seeds:`; else as always
        key["train_seed"] = ladder.ctx.seed
    digest = method.input_digest(rung_params(rung), ladder.ctx)
    if digest is not None:  # only then: other rungs' hashes stay what they always were
        key["inputs"] = digest
    against, judged = ladder.task.judge_inputs()  # task.judges: the outputs and the runs they judge with
    if against is not None and against != rung.run_name and against in [r.run_name for r in ladder.spec.rungs]:
        key["judged_against"] = rung_hash(ladder, chosen_rung(ladder, ladder.spec.rung(against)),
                                          (*_below, rung.run_name))
    if judged is not None:
        key["judge_runs"] = judged
    if runtime:  # only when not plain training: other hashes stay as they were
        key["runtime"] = runtime
    if rung.from_ is not None:  # only then: the hashes of rungs without `from` stay what they always were
        if rung.from_ in (*_below, rung.run_name):  # parse_ladder reports cycles; a spec built in code may have one
            raise UserError(f"rung '{rung.run_name}' starts from '{rung.from_}', which starts from it: a cycle.")
        parent = chosen_rung(ladder, ladder.spec.rung(rung.from_))
        key["from"] = rung_hash(ladder, parent, (*_below, rung.run_name))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def rung_runtime(ladder: Ladder, rung: RungSpec, device: str | None = None) -> Runtime:
    """How the rung trains on the ladder's device (or ``device``): the ladder's and the rung's ``runtime:`` against
    what the rung's training honours and the machine (see :mod:`adaptlab.runtime`)."""
    requested = rung.runtime.over(ladder.spec.runtime) if rung.runtime else ladder.spec.runtime
    method = METHODS.get(rung.method)
    options = method.runtime_options if method.trains else frozenset()  # a rung that trains nothing uses none
    causal = lm.model_kind(lm.load_config(ladder.ctx.model, ladder.ctx.trust_remote_code)) == "causal" \
        if "packing" in options else False  # only then does it matter (and is the model an LM)
    return resolve(requested, Machine.of(device or ladder.ctx.torch_device), options, causal, rung.run_name)


def parent_record(ladder: Ladder, rung: RungSpec, inputs: Path) -> dict[str, str] | None:
    """run.json's ``from`` for a rung with ``from``: the rung it starts from, the hash that rung must have been run
    with, and its folder in ``inputs`` (the ladder's output). None for a rung that starts from the base model."""
    if rung.from_ is None:
        return None
    parent = chosen_rung(ladder, ladder.spec.rung(rung.from_))
    return {"rung": parent.run_name, "rung_sha256": rung_hash(ladder, parent), "dir": str(inputs / parent.run_name)}


def prepare(spec: LadderSpec, output: Path | None = None) -> Ladder:
    """Load and split the data once, resolve the base model, build the shared context (on several processes the
    main one first, so that it alone downloads or builds into the shared caches)."""
    with distributed.main_first("loading the data and the model"):
        return _prepare(spec, output)


def _prepare(spec: LadderSpec, output: Path | None = None) -> Ladder:
    from adaptlab.data.source import load_frames

    folder = output or spec.output_path()
    check_output_folder(folder)
    if bundle.is_bundle(folder):  # a later export there would replace the ladder's runs
        raise UserError(f"output folder '{folder}' holds an exported bundle ({bundle.MANIFEST}); give the ladder a "
                        "folder of its own (--output or output_dir).")
    check_rung_folders(folder, [r.run_name for r in spec.rungs])
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
        seed=training_seeds(spec)[0],
        device=spec.device,
        trust_remote_code=spec.trust_remote_code,
        allow_pickle=spec.allow_pickle,
        extra={"task": spec.task.model_dump(mode="json"), "base_dir": str(spec.base_dir.resolve())},
    )
    _ = ctx.model  # resolve now: an unknown model is a user error before any rung starts
    check_rungs(spec, ctx, data)
    check_train_sizes(spec, task, data)
    return Ladder(spec, task, data, ctx, folder, task.fingerprint(data), config_hash(spec),
                  overlap=_overlap(task, data))


def _overlap(task: Any, data: Any) -> dict:
    """The held-out examples that occur in the training split; a warning when test examples do."""
    from adaptlab.data.overlap import overlap_warning, split_overlap

    found = split_overlap(task, data)
    message = overlap_warning(found)
    if message and distributed.is_main():
        log.warning("%s", message)
    return found


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
    agreement = _lead_rung(ladder, rung, resume, inputs)  # on several processes: the others fit it with this one
    try:
        method = build_method(rung, ladder.ctx)
        with cpu_kernels(rung_runtime(ladder, rung), method.computes_in_half()):  # its predictions too
            if parent is not None:
                _start_from(run, method, parent)  # before setup(), which loads the weights
            fit, meter = _fit(run, method, resume)
            agreement.fitted(method.trainable_state, run.write_info)  # raises when another process failed
            evaluation = _evaluate(run, method, fit) if method.predicts else _own_evaluation(run, method)
            cost = with_parent_cost(_measure(run, method, fit, meter), parent)
            result = _results(run, base, evaluation, cost, fit)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failing rung is recorded; the ladder goes on
        agreement.failed(exc)  # first: stops the run (checkpoints kept) when the other processes can't agree
        detail = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        (run.staging / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        shutil.rmtree(run.staging / "checkpoints", ignore_errors=True)
        result = base.model_copy(update={"error": detail})
    if method is not None and method.adjustments:  # settings used in place of the configured ones (warned about)
        run.write_info(adjustments=method.adjustments)
    if result.ok:  # what --resume checks is still there before keeping it
        run.write_info(files=file_sizes(run.staging))
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
    digest, resumable = rung_hash(ladder, rung), rung_hash(ladder, rung, checkpoint=True)
    if not resume or _staged_hash(staging) != resumable:  # never resume from a checkpoint of other settings
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    ladder.ctx.reset_caches()
    info = {
        "ladder": ladder.spec.name, "rung": rung.model_dump(mode="json"),
        "params": rung_params(rung).model_dump(mode="json"), "task": ladder.spec.task.model_dump(mode="json"),
        "data": ladder.spec.data.model_dump(mode="json"), "context": ladder.ctx.to_dict(), "rung_sha256": digest,
        "checkpoint_sha256": resumable,
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
    if ladder.ctx.seed != ladder.spec.seed:  # `seeds:`: trained with another seed than the split's
        prov["train_seed"] = ladder.ctx.seed
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


def validation_scorer(ladder: Ladder, method: Method) -> ValidationScorer | None:
    """How training scores ``method`` on the validation split with the task's selection metric (its primary one
    unless that is a judge's; no intervals: the task's ``score``), to keep the best weights and stop early; None when
    the validation split is empty."""
    if not len(ladder.data.validation):
        return None
    meta, primary = ladder.data.meta(), ladder.task.selection_metric
    return ValidationScorer(primary, higher_is_better(primary),
                            lambda: validation_score(ladder, method, primary, meta))


@contextlib.contextmanager
def _during_fit(run: RungRun, method: Method, runtime: Runtime, scorer: ValidationScorer | None) -> Iterator[None]:
    """What a rung's set-up and fit see: its runtime (and its CPU kernels), progress reports, the validation scorer,
    finished runs."""
    tokens = [(RUNTIME, RUNTIME.set(runtime)),
              (STEP_REPORTER, STEP_REPORTER.set(lambda step, total, loss: run.say(_step_text(step, total, loss)))),
              (VALIDATION_SCORER, VALIDATION_SCORER.set(scorer or validation_scorer(run.ladder, method))),
              (FINISHED_RUNS, FINISHED_RUNS.set(load_scorer))]  # a rung learning from another run's output (grpo)
    try:
        with cpu_kernels(runtime, method.computes_in_half()):
            yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _fit(run: RungRun, method: Method, resume: bool,
         scorer: ValidationScorer | None = None) -> tuple[dict, Any]:
    """Load the base and fit, metered (time, peak memory); run.json records what training actually did.
    ``scorer`` replaces the validation scorer training keeps the best weights by (a tuning trial's reports)."""
    runtime = rung_runtime(run.ladder, run.rung)
    for note in runtime.notes:
        log.warning("%s: runtime %s.", run.rung.run_name, note)
    run.say("loading")
    release_memory()
    with _during_fit(run, method, runtime, scorer), measure() as meter:
        method.setup()
        run.say("training")
        fit = method.fit(run.ladder.data, run.staging, resume=resume)
    if method.trains or runtime.notes:
        fit["runtime"] = runtime.record()
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
    judged = ladder.task.judge(method, records, judge_site(run))  # task.judges: reward, LLM judge, MMLU
    return {**evaluation, **extra, **({"judges": judged["judges"]} if judged["judges"] else {}),
            "metrics": {**evaluation["metrics"], **extra, **judged["metrics"]},
            "interval": {**evaluation["interval"], **judged["interval"]},
            "diagnosis": ladder.task.diagnose(records, fit, ladder.data)}


def judge_site(run: RungRun) -> JudgeSite:
    """Where the task's judges find the ladder's other rungs, finished runs and device (see adaptlab.judging): the
    root ladder's folder, whose ``against`` rung (it trains nothing, so seed and size ladders don't re-run it)
    answered the same test split."""
    ladder = run.ladder
    return JudgeSite(output=ladder.root.output, rung=run.rung.run_name, seed=ladder.spec.seed,
                     device=ladder.ctx.torch_device, load_run=load_scorer)


def _measure(run: RungRun, method: Method, fit: dict, meter: Any) -> dict:
    """Latency of one example at a time, then save what ships and account its cost."""
    task, test = run.ladder.task, run.ladder.data.test
    latency: dict[str, float] = {}
    if method.predicts:  # a pre-training stage (domain_mlm) predicts nothing to time
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
        **dict(base), "status": "ok", "value": evaluation["metrics"].get(primary),  # None: predicts nothing
        "interval": evaluation["interval"].get(primary), "metrics": evaluation["metrics"], "cost": cost,
        "error": None, "diagnosis": evaluation["diagnosis"], "intervals": evaluation["interval"],
        "history": fit.get("history", []), "resumed_from": fit.get("resumed_from"),
        "training": run.info.get("training", {}),
        "details": {k: v for k, v in evaluation.items() if k not in ("metrics", "interval", "diagnosis")},
    })


# -- pre-training stages and the cost of a rung's parent (domain_mlm, `from:`) ---------------------------------------
def _own_evaluation(run: RungRun, method: Method) -> dict:
    """A rung that predicts nothing (``predicts`` False): no predictions, no value, no diagnosis; its own metrics on
    the test split's inputs, and ``predicts: false`` in metrics.json (the report shows it apart from the ranking)."""
    run.say("measuring")
    return {"metrics": method.own_metrics(run.ladder.data.test), "interval": {}, "diagnosis": None,
            "predicts": False}


def with_parent_cost(cost: dict, parent: dict[str, str] | None) -> dict:
    """A rung that starts from another rung's output (``from``) pays for it too: ``train_seconds`` adds the
    parent's (which holds its own parent's, down the chain) and ``peak_memory_mb`` is the larger of the two; the
    rung's own values stay under ``own`` and the parent's under ``from_rung``. ``trainable_params`` stays this
    rung's own (what it trains on top); the parent's are in ``from_rung``."""
    if parent is None:
        return cost
    spent = json.loads((Path(parent["dir"]) / "metrics.json").read_text(encoding="utf-8")).get("cost") or {}
    keys = ("train_seconds", "peak_memory_mb", "trainable_params", "total_params", "size_on_disk_bytes")
    before = {"rung": parent["rung"], **{k: spent.get(k) for k in keys}}
    own = {k: cost[k] for k in ("train_seconds", "peak_memory_mb")}
    return {**cost, "train_seconds": round(own["train_seconds"] + (spent.get("train_seconds") or 0.0), 3),
            "peak_memory_mb": max(own["peak_memory_mb"], spent.get("peak_memory_mb") or 0.0),
            "own": own, "from_rung": before}


def training_record(fit: dict) -> dict:
    """The resolved training settings a fit reports (schedule, class weights, which weights were kept: selection);
    empty for rungs that don't train."""
    return {k: fit[k] for k in ("schedule", "class_weights", "selection", "runtime") if fit.get(k) is not None}


def _staged_hash(staging: Path) -> str | None:
    """The checkpoint hash a staged rung was started with (its rung hash when staged before that was recorded)."""
    try:
        info = json.loads((staging / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info.get("checkpoint_sha256") or info.get("rung_sha256")


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
    changed = changed_files(folder, run["files"]) if isinstance(run.get("files"), dict) else []
    if changed:  # a folder damaged since it finished is run again, never kept
        log.warning("%s: %s changed or went missing since the rung finished, so it is not kept as finished.", folder,
                    ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else ""))
        return None
    return result.entry()


def rank(entries: list[dict], metric_higher_is_better: bool = True) -> list[dict]:
    """Finished rungs best first, then finished rungs without a value (pre-training stages), then failed ones."""
    ok = [e for e in entries if e["status"] == "ok" and e["value"] is not None]
    stages = [e for e in entries if e["status"] == "ok" and e["value"] is None]
    failed = [e for e in entries if e["status"] != "ok"]
    ok.sort(key=lambda e: e["value"], reverse=metric_higher_is_better)
    return ok + stages + failed


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
        "overlap": ladder.overlap,
    }
    write_json_atomic(ladder.output / "leaderboard.json", board)
    return board


def judge_ladder(ladder: Ladder, entries: dict[str, dict]) -> None:
    """Judging that needs every rung's result (``task.judges.against: best``): what the task returns joins each
    rung's metrics.json (metrics, intervals, judges) and its leaderboard entry."""
    ranked = [e["rung"] for e in rank(list(entries.values()), higher_is_better(ladder.task.primary_metric))
              if e["status"] == "ok" and e["value"] is not None
              and (ladder.output / e["rung"] / "predictions.jsonl").is_file()]
    site = JudgeSite(output=ladder.output, rung="", seed=ladder.spec.seed, device=ladder.ctx.torch_device,
                     load_run=load_scorer)
    for name, judged in ladder.task.judge_ladder(ranked, site).items():
        path = ladder.output / name / "metrics.json"
        before = json.loads(path.read_text(encoding="utf-8"))
        saved = {**before, "metrics": {**before["metrics"], **judged["metrics"]},
                 "intervals": {**(before.get("intervals") or {}), **judged["interval"]},
                 "judges": {**(before.get("judges") or {}), **judged["judges"]}}
        if saved != before:
            write_json_atomic(path, saved)
        entries[name] = {**entries[name], "metrics": {**entries[name]["metrics"], **judged["metrics"]}}


def compare(
    ladder: Ladder, *, resume: bool = False, only: list[str] | None = None, progress: Progress | None = None
) -> dict:
    """Run every rung (or those named in ``only``) on the ladder's split, in the config's order (a rung with
    ``from`` after the rung it starts from); returns the leaderboard. Launched on several processes (torchrun), the
    main one runs the ladder and writes; the others fit its trained rungs with it and return {}
    (see :mod:`adaptlab.distributed`)."""
    wanted = {ladder.spec.rung(n).run_name for n in only} if only else None
    rungs = [r for r in ladder.spec.rungs if wanted is None or r.run_name in wanted]
    if not distributed.is_main():
        return _follow(ladder)  # trains the rungs the main process announces; writes nothing
    with distributed.leading(distributed_settings(ladder)), OutputLock(ladder.output):
        write_json_atomic(ladder.output / "ladder.json", ladder.spec.model_dump(mode="json", exclude={"base_dir"}))
        entries: dict[str, dict] = {}
        for rung in ladder.spec.rungs:  # keep earlier results of rungs not being re-run
            if rung not in rungs:
                previous = finished_entry(ladder, chosen_rung(ladder, rung))
                if previous:
                    entries[rung.run_name] = previous
        for rung in rungs:
            entries[rung.run_name] = run_configured(ladder, rung, resume=resume, progress=progress)
            write_leaderboard(ladder, list(entries.values()))
        judge_ladder(ladder, entries)
        shutil.rmtree(ladder.output / ".partial", ignore_errors=True)
        return write_leaderboard(ladder, list(entries.values()))


def check_repro(ladder: Ladder, rung_name: str, scratch: Path) -> dict:
    """Re-run a finished rung into ``scratch`` and diff its predictions and metrics with the recorded run."""
    if distributed.is_distributed():
        raise UserError("--check-repro runs on one process; run it without torchrun / accelerate launch.")
    rung = chosen_rung(ladder, ladder.spec.rung(rung_name))  # a tuned rung re-runs the settings its search chose
    recorded = ladder.output / rung_name
    if not (recorded / "metrics.json").is_file():
        raise UserError(f"{recorded}: no finished run to check; run `adaptlab compare` first.")
    # judges find the recorded `against` rung's outputs through the root ladder (the recorded one)
    again = Ladder(**{**ladder.__dict__, "output": scratch, "primary": ladder.root})
    # a scratch re-run is not a run to list; a rung with `from` starts from the recorded parent, as it did
    run_rung(again, rung, record=False, inputs=ladder.output)
    differences = []
    old_m = json.loads((recorded / "metrics.json").read_text(encoding="utf-8"))
    new_m = json.loads((scratch / rung_name / "metrics.json").read_text(encoding="utf-8"))
    # what judging after the whole ladder added (against: best) a lone re-run doesn't measure
    later = set(PAIRWISE_METRICS) if ladder.task.judge_inputs()[0] == BEST else set()
    for key in ("status", "metrics", "intervals", "per_class", "confusion_matrix"):
        old, new = (({k: v for k, v in m.items() if k not in later} if isinstance(m, dict) else m)
                    for m in (old_m.get(key), new_m.get(key)))
        if old != new:
            differences.append(f"metrics.json `{key}`: recorded {old} vs now {new}")
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


def load_scorer(path: Path) -> tuple[Any, Any, dict]:
    """What scores text for a reward (``task.judges.reward``, grpo's ``params.reward``): a finished run folder
    (:func:`load_run`), or an exported classifier bundle, loaded with :func:`adaptlab.bundle.load` as (None, its
    predictor, its manifest). Loading sets the process's kernels for it (:func:`adaptlab.runtime.kernels_for`): a
    caller running a rung reads them and restores its own, as :func:`adaptlab.judging.reward.build_scorer` does."""
    if bundle.is_bundle(Path(path)):  # loading sets its kernels; reward.build_scorer restores the caller's
        return None, bundle.load(path), bundle.read_manifest(Path(path))
    return load_run(path)


def read_predictions(run_dir: Path) -> list[dict]:
    return read_run_jsonl(Path(run_dir) / "predictions.jsonl")


# -- the configured rung: searched with the ladder's tuning budget, repeated over training seeds -------------------
SEEDS_DIR = "seeds"


def training_seeds(spec: LadderSpec) -> list[int]:
    """The training seeds every training rung runs with (``seeds:``; default the ladder's one ``seed``)."""
    return list(spec.seeds or [spec.seed])


def run_configured(ladder: Ladder, rung: RungSpec, *, resume: bool = False, progress: Progress | None = None) -> dict:
    """One rung as the ladder configures it; returns its leaderboard entry. With ``tuning:`` covering it, its
    settings are searched on the validation split first and the chosen ones run like any rung (and the default
    settings too, on test, for the report); with several ``seeds`` a training rung is repeated with each; on the
    ``train_sizes`` curve it is re-run on nested subsets of the training split (:func:`_size_record`)."""
    search = tune_rung(ladder, rung, resume=resume, progress=progress) if _tuned(ladder, rung) else None
    chosen = rung if search is None else _with_params(rung, search.chosen_params())
    entry = _run_or_resume(ladder, chosen, resume, progress)
    extra: dict[str, Any] = {}
    if search is not None:
        extra["tuning"] = _tuning_record(ladder, rung, chosen, search, entry, resume, progress)
    if len(training_seeds(ladder.spec)) > 1 and METHODS.get(rung.method).trains:
        extra["seeds"] = _seed_record(ladder, chosen, entry, resume, progress)
    if on_curve(ladder, rung) and entry["status"] == "ok":
        extra["train_sizes"] = _size_record(ladder, chosen, entry, extra.get("seeds"), resume, progress)
    # written every time (None when not asked for): a result kept by --resume never shows a search, seeds or a
    # curve that the ladder no longer has
    cleared = {"tuning": None, "seeds": None, "train_sizes": None}
    return _amend(ladder, chosen, {**cleared, **extra}) if entry["status"] == "ok" else entry


def _run_or_resume(ladder: Ladder, rung: RungSpec, resume: bool, progress: Progress | None,
                   record: bool = True, inputs: Path | None = None) -> dict:
    """The rung's entry: its finished result when resuming and it finished with these settings, else a new run."""
    previous = finished_entry(ladder, rung) if resume else None
    if previous is not None:
        if progress:
            progress(rung.run_name, "already finished (resume)")
        return previous
    return run_rung(ladder, rung, resume=resume, progress=progress, record=record, inputs=inputs)


def _amend(ladder: Ladder, rung: RungSpec, extra: dict[str, Any]) -> dict:
    """Add the search and seed records to the rung's published metrics.json; returns its new entry."""
    path = ladder.output / rung.run_name / "metrics.json"
    result = RungResult.model_validate(json.loads(path.read_text(encoding="utf-8")))
    recorded = result.model_dump()
    if any(recorded.get(key) != value for key, value in extra.items()):  # rewritten only to change what it says
        result = result.model_copy(update=extra)
        write_json_atomic(path, result.model_dump())
    return result.entry()


def _with_params(rung: RungSpec, params: dict[str, Any]) -> RungSpec:
    return rung.model_copy(update={"params": {**rung.params, **params}})


# -- tuning ----------------------------------------------------------------------------------------------------------
def _space(ladder: Ladder, rung: RungSpec) -> dict:
    from adaptlab.tuning import search_space

    spec = ladder.spec.tuning
    return search_space(spec, rung.run_name, METHODS.get(rung.method).search_space) if spec else {}


def _tuned(ladder: Ladder, rung: RungSpec) -> bool:
    from adaptlab.tuning import is_tuned

    return is_tuned(ladder.spec.tuning, rung.run_name, _space(ladder, rung))


def _search(ladder: Ladder, rung: RungSpec, resume: bool | None) -> Any:
    """The rung's :class:`~adaptlab.tuning.Search`: continued from its record when ``resume``, started afresh when
    not; with ``resume=None`` only read (None unless a finished search with these settings is on disk)."""
    from adaptlab.tuning import TUNING_DIR, Search

    spec = ladder.spec.tuning
    assert spec is not None
    space = _space(ladder, rung)
    metric = spec.metric or ladder.task.selection_metric
    key = {"rung": rung_hash(ladder, rung), "space": {k: v.model_dump(mode="json") for k, v in space.items()},
           "budget": spec.model_dump(mode="json", include={"trials", "minutes", "metric", "pruning"})}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    configured = rung_params(rung).model_dump(mode="json")
    args = dict(space=space, spec=spec, metric=metric, higher_is_better=higher_is_better(metric),
                seed=ladder.ctx.seed, defaults={k: configured[k] for k in space})
    folder = ladder.output / TUNING_DIR / rung.run_name
    return Search.read(folder, digest, **args) if resume is None else Search.open(folder, digest, resume=resume,
                                                                                   **args)


def tune_rung(ladder: Ladder, rung: RungSpec, *, resume: bool = False, progress: Progress | None = None) -> Any:
    """Search the rung's settings with the ladder's budget, on train and validation only; returns the search."""
    search = _search(ladder, rung, resume)
    say = (lambda stage: progress(rung.run_name, stage)) if progress else (lambda stage: None)
    if search.trials and resume:
        say(f"tuning: continuing after {len(search.trials)} recorded trial(s)")
    while not search.done:
        search.record(run_trial(ladder, rung, search.ask(), search.metric, search.folder, say))
    best = search.best
    say(f"tuning: chose trial {best.number} ({search.metric} {best.value:.4g} on validation)" if best
        else "tuning: no trial finished; the configured settings run")
    return search


def chosen_rung(ladder: Ladder, rung: RungSpec) -> RungSpec:
    """The rung with the settings its finished search chose (itself when it isn't tuned or not yet searched)."""
    if not _tuned(ladder, rung):
        return rung
    search = _search(ladder.root, rung, resume=None)  # searches are made and recorded by the ladder itself
    return rung if search is None else _with_params(rung, search.chosen_params())


def run_trial(ladder: Ladder, rung: RungSpec, live: Any, metric: str, folder: Path,
              say: Callable[[str], None]) -> Any:
    """Fit one trial's settings on the training split and score it on validation; the test split is sealed."""
    from adaptlab.tuning import MetricMissing, Pruned, Trial

    trial = Trial(live.number, live.params)
    say(f"tuning: trial {live.number} {json.dumps(live.params)}")
    start = time.perf_counter()
    workdir = folder / f"trial-{live.number}"
    try:
        method, fit = _fit_trial(ladder, _with_params(rung, live.params), workdir, live, metric, say)
        with cpu_kernels(rung_runtime(ladder, rung), method.computes_in_half()):  # as its fit scored validation
            trial.value = validation_score(ladder, method, metric, _search_meta(ladder))
        trial.trainable_params, trial.steps = method.parameter_counts()[0], fit.get("steps")
    except Pruned:
        trial.state = "pruned"
    except (KeyboardInterrupt, MetricMissing):  # a config problem, not this trial's: the search stops
        raise
    except Exception as exc:  # a failing trial is recorded; the search goes on
        trial.state, trial.error = "failed", str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
    finally:  # shared caches (the base model's text embeddings) are kept across trials: the search reuses them
        shutil.rmtree(workdir, ignore_errors=True)
    trial.intermediate, trial.seconds = list(live.intermediate), time.perf_counter() - start
    say(f"tuning: trial {live.number} {trial.state}" + (f", {metric} {trial.value:.4g}" if trial.value is not None
                                                        else f": {trial.error}" if trial.error else ""))
    return trial


def _fit_trial(ladder: Ladder, rung: RungSpec, workdir: Path, live: Any, metric: str,
               say: Callable[[str], None]) -> tuple[Method, dict]:
    """Build, start (from its parent rung, if any) and fit a trial's method with the test split sealed; each
    validation score the training reports goes to the search (which may prune the trial)."""
    from adaptlab.tuning import SealedSplit

    sealed = Ladder(**{**ladder.__dict__, "data": dataclasses.replace(ladder.data, test=SealedSplit())})
    workdir.mkdir(parents=True, exist_ok=True)
    run = RungRun(sealed, rung, workdir, {}, say)
    method = build_method(rung, ladder.ctx)
    parent = parent_record(ladder, rung, ladder.output)
    if parent is not None:
        _start_from(run, method, parent)
    meta = _search_meta(ladder)
    score = live.reporting(lambda: validation_score(sealed, method, metric, meta))
    fit, _ = _fit(run, method, resume=False, scorer=ValidationScorer(metric, higher_is_better(metric), score))
    return method, fit


def _search_meta(ladder: Ladder) -> dict:
    """The task data's meta() as a search may see it: computed with the validation split standing in for the test
    split, so nothing of the test split (not even which labels occur in it) shapes the scores a search compares."""
    return dataclasses.replace(ladder.data, test=ladder.data.validation).meta()


def validation_score(ladder: Ladder, method: Method, metric: str, meta: dict) -> float:
    """``metric`` of the method's predictions on the validation split; ``meta`` is the task data's meta()."""
    records = ladder.task.predict(method, ladder.data.validation)
    metrics = ladder.task.score(records, {**meta, "seed": ladder.spec.seed})
    if metric not in metrics:
        from adaptlab.tuning import MetricMissing

        raise MetricMissing(f"tuning.metric '{metric}' is not a metric of task '{ladder.spec.task.type}'."
                        f"{did_you_mean(metric, list(metrics))} Its metrics: {sorted(metrics)}")
    return float(metrics[metric])


def _tuning_record(ladder: Ladder, rung: RungSpec, chosen: RungSpec, search: Any, entry: dict, resume: bool,
                   progress: Progress | None) -> dict:
    """The search's summary with the test scores of the chosen settings and (run now, when they differ from the
    chosen ones) of the configured defaults: the report's "tuned vs default"."""
    from adaptlab.tuning import TUNING_DIR

    summary = search.summary()
    tuned = {"params": search.chosen_params(), "validation": (summary["best"] or {}).get("validation"),
             "test": entry.get("value"), "interval": entry.get("interval"), "dir": chosen.run_name}
    default = {**summary["default"], "test": entry.get("value"), "interval": entry.get("interval"),
               "dir": chosen.run_name}
    if search.chosen_params() != search.defaults:
        where = Ladder(**{**ladder.__dict__, "output": search.folder / "default", "primary": ladder.root})
        tagged = (lambda name, stage: progress(f"{name} (default settings)", stage)) if progress else None
        result = _run_or_resume(where, rung, resume, tagged, record=False, inputs=ladder.output)
        default.update(test=result.get("value"), interval=result.get("interval"),
                       dir=str(Path(TUNING_DIR) / rung.run_name / "default" / rung.run_name))
    registry.record_trials(ladder.output / chosen.run_name, ladder.spec.name, rung.run_name, search.metric,
                           [t.to_dict() for t in search.trials])
    return {**summary, "tuned": tuned, "default": default}


# -- seeds -----------------------------------------------------------------------------------------------------------
def reseeded(ctx: RunContext, seed: int) -> RunContext:
    """``ctx`` with another training seed (itself when the seed is the same); the copy shares the resolved model
    and the shared caches."""
    if seed == ctx.seed:
        return ctx
    ctx = copy.copy(ctx)
    ctx.seed = seed
    return ctx


def seed_ladder(ladder: Ladder, seed: int) -> Ladder:
    """The ladder with another training seed (same split, data and model), writing under ``seeds/seed-N``."""
    output = ladder.output / SEEDS_DIR / f"seed-{seed}"
    return Ladder(**{**ladder.__dict__, "ctx": reseeded(ladder.ctx, seed), "output": output, "primary": ladder.root})


def _seed_record(ladder: Ladder, rung: RungSpec, entry: dict, resume: bool, progress: Progress | None) -> dict:
    """Run the rung with every other training seed; its values per seed with their mean and spread."""
    from adaptlab.evaluation.seeds import summarize

    first, *others = training_seeds(ladder.spec)
    values: dict[int, float | None] = {first: entry.get("value") if entry["status"] == "ok" else None}
    dirs = {first: rung.run_name}
    for seed in others:
        where = seed_ladder(ladder, seed)
        tagged = (lambda name, stage, s=seed: progress(f"{name} (seed {s})", stage)) if progress else None
        result = _run_or_resume(where, rung, resume, tagged, record=False)
        shutil.rmtree(where.output / ".partial", ignore_errors=True)
        values[seed] = result.get("value") if result["status"] == "ok" else None
        dirs[seed] = str(Path(SEEDS_DIR) / f"seed-{seed}" / rung.run_name)
    return summarize(values, dirs)


# -- training sizes: the data-efficiency curve (`train_sizes:`) -------------------------------------------------------
TRAIN_SIZES_DIR = "train_sizes"


def train_strata(task: Any, data: Any) -> list[str] | None:
    """The class of each training example when the task stratifies its splits by a label (it declares a
    ``stratify_role``): a curve's sizes then count examples per class. None otherwise: sizes count examples."""
    return task.strata(data) if task.stratify_role else None


def check_train_sizes(spec: LadderSpec, task: Any, data: Any) -> None:
    """Before any rung starts: a DataError naming each size the training split can't provide (per class: the
    smallest class and its count), with the fix."""
    from adaptlab.data.subsets import check_sizes

    if spec.train_sizes is not None:
        sizes = [s for s in spec.train_sizes.sizes if s != "all"]
        check_sizes(train_strata(task, data), sizes, len(data.train), source=f"ladder '{spec.name}'")


def size_seeds(spec: LadderSpec) -> list[int]:
    """The seeds each size below ``all`` runs with, ``train_sizes.repeats`` of them: the training seeds, continued
    with the next integers."""
    seeds, repeats = training_seeds(spec), spec.train_sizes.repeats if spec.train_sizes else 1
    return [*seeds, *range(max(seeds) + 1, max(seeds) + 1 + repeats)][:repeats]


def on_curve(ladder: Ladder, rung: RungSpec) -> bool:
    """Whether the rung is on the ladder's data-efficiency curve (``train_sizes.rungs``, default every rung)."""
    spec = ladder.spec.train_sizes
    return spec is not None and (spec.rungs is None or rung.run_name in spec.rungs)


def size_ladder(ladder: Ladder, size: int, seed: int) -> Ladder:
    """The ladder on the nested training subset of ``size`` drawn with ``seed`` and trained with it (same
    validation and test split, same model), writing under ``train_sizes/n-<size>/seed-<seed>``. The subsets of one
    seed are nested: the 8-per-class one lies inside the 16-per-class one."""
    from adaptlab.data.subsets import nested_subsets

    data = ladder.data
    index = nested_subsets(train_strata(ladder.task, data), [size], seed, n=len(data.train))[size]
    data = dataclasses.replace(data, train=data.train.subset(index))
    output = ladder.output / TRAIN_SIZES_DIR / f"n-{size}" / f"seed-{seed}"
    return Ladder(**{**ladder.__dict__, "data": data, "data_hash": ladder.task.fingerprint(data),
                     "ctx": reseeded(ladder.ctx, seed), "output": output, "primary": ladder.root})


def _size_record(ladder: Ladder, rung: RungSpec, entry: dict, seeds: dict | None, resume: bool,
                 progress: Progress | None) -> dict:
    """The rung's curve: a rung that trains is re-run at each size below ``all`` with each size seed (``all`` is
    its own run on the whole split, over its training seeds); one that doesn't is a flat reference, its one run."""
    strata = train_strata(ladder.task, ladder.data)
    method = METHODS.get(rung.method)
    record = {"unit": "examples" if strata is None else "per_class",
              "classes": None if strata is None else len(set(strata)), "trains": method.trains,
              "predicts": method.predicts}  # a stage (domain_mlm) runs at each size for its children, unplotted
    if not record["trains"]:
        reference = {"value": entry.get("value"), "interval": entry.get("interval"), "dir": rung.run_name}
        return {**record, "points": [], "reference": reference}
    assert ladder.spec.train_sizes is not None
    points = [_whole_point(ladder, rung, entry, seeds) if size == "all"
              else _size_point(ladder, rung, size, resume, progress) for size in ladder.spec.train_sizes.sizes]
    return {**record, "points": points}


def _size_point(ladder: Ladder, rung: RungSpec, size: int, resume: bool, progress: Progress | None) -> dict:
    """One size: the rung run (or, resuming, kept) on each seed's subset; ``train_ids.json`` beside the runs lists
    the examples of the subset."""
    from adaptlab.evaluation.data_efficiency import point

    values: dict[int, float | None] = {}
    intervals: dict[int, list[float] | None] = {}
    dirs: dict[int, str] = {}
    for seed in size_seeds(ladder.spec):
        where = size_ladder(ladder, size, seed)
        write_json_atomic(where.output / "train_ids.json", {"size": size, "seed": seed, "ids": where.data.train.ids})
        tagged = None if progress is None else (
            lambda name, stage, n=size, s=seed: progress(f"{name} (n={n}, seed {s})", stage))
        result = _run_or_resume(where, rung, resume, tagged, record=False)
        shutil.rmtree(where.output / ".partial", ignore_errors=True)
        ok = result["status"] == "ok"
        values[seed], intervals[seed] = (result.get("value"), result.get("interval")) if ok else (None, None)
        dirs[seed] = str(Path(TRAIN_SIZES_DIR) / f"n-{size}" / f"seed-{seed}" / rung.run_name)
    return point(size, len(where.data.train), values, intervals, dirs)


def _whole_point(ladder: Ladder, rung: RungSpec, entry: dict, seeds: dict | None) -> dict:
    """``all``: the rung's own run on the whole training split, with each training seed's run when it has several
    (their intervals read from their metrics.json)."""
    from adaptlab.evaluation.data_efficiency import point

    if seeds:
        values = {int(s): v for s, v in seeds["values"].items()}
        dirs = {int(s): d for s, d in seeds["dirs"].items()}
    else:
        values, dirs = {ladder.ctx.seed: entry.get("value")}, {ladder.ctx.seed: rung.run_name}
    intervals = {s: _recorded_interval(ladder.output / d) for s, d in dirs.items()}
    return point("all", len(ladder.data.train), values, intervals, dirs)


def _recorded_interval(folder: Path) -> list[float] | None:
    """The primary metric's 95% interval of a finished run folder (None when it can't be read or failed)."""
    try:
        return RungResult.model_validate(json.loads((folder / "metrics.json").read_text(encoding="utf-8"))).interval
    except (OSError, ValueError):
        return None


# -- many processes (torchrun, accelerate launch): the main process leads, the others fit with it ---------------------
def distributed_settings(ladder: Ladder) -> distributed.DistributedSpec:
    """The ladder's ``distributed:`` settings, its DeepSpeed config file resolved against the ladder's folder."""
    spec = ladder.spec.distributed or distributed.DistributedSpec()
    if distributed.is_distributed() and ladder.spec.tuning is not None:
        raise UserError("tuning: searching settings on several processes is not supported yet; run the search on "
                        "one process (without torchrun / accelerate launch), or drop `tuning:`.")
    if distributed.is_distributed() and ladder.spec.train_sizes is not None:
        raise UserError("train_sizes: the data-efficiency curve runs on one process; run it without torchrun / "
                        "accelerate launch, or drop `train_sizes:`.")
    if spec.deepspeed_config:
        spec = spec.model_copy(update={"deepspeed_config": str(ladder.spec.resolve_path(spec.deepspeed_config))})
    return spec


def _lead_rung(ladder: Ladder, rung: RungSpec, resume: bool, inputs: Path | None) -> distributed.RungAgreement:
    """On several processes, a rung that trains through the Trainer is announced (after staging, so the others
    find its folder ready) and fitted by every process; the others don't take part in any other rung."""
    shared = distributed.is_distributed() and METHODS.get(rung.method).data_parallel
    if shared:
        distributed.announce({"rung": rung.model_dump(mode="json", by_alias=True), "seed": ladder.ctx.seed,
                              "output": str(ladder.output), "resume": resume,
                              "inputs": str(inputs) if inputs is not None else None})
    return distributed.RungAgreement(rung.run_name, shared)


def _follow(ladder: Ladder) -> dict:
    """A process other than the main one: fit each rung the main process announces, until it stops."""
    distributed.follow(distributed_settings(ladder), lambda command: _follow_rung(ladder, command))
    return {}


class _FollowerRun(RungRun):
    """A follower's view of a rung: the main process's staging folder (where the Trainer's checkpoints go), but
    run.json is the main process's to write."""

    def write_info(self, **extra: Any) -> None:
        self.info.update(extra)


def _follow_rung(ladder: Ladder, command: dict) -> None:
    """Fit an announced rung with the main process (the Trainer makes it one DDP/DeepSpeed run), then agree."""
    rung = RungSpec.model_validate(command["rung"])
    rung.found_next_to(ladder.spec.base_dir.resolve())  # models in its params are found as the main process found them
    ctx = reseeded(ladder.ctx, command["seed"])  # another training seed (`seeds:`), or the same context
    here = Ladder(**{**ladder.__dict__, "ctx": ctx, "output": Path(command["output"])})
    ctx.reset_caches()
    run = _FollowerRun(here, rung, partial_dir(here.output, rung.run_name), {}, lambda stage: None)
    agreement = distributed.RungAgreement(rung.run_name, True)
    inputs = Path(command["inputs"]) if command["inputs"] else None
    try:
        method = build_method(rung, ctx)
        parent = parent_record(here, rung, inputs or here.output)
        if parent is not None:
            _start_from(run, method, parent)
        _fit(run, method, command["resume"])
        agreement.fitted(method.trainable_state)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the main process records the rung's failure
        agreement.failed(exc)
