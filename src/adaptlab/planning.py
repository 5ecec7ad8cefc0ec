"""Before a ladder runs: each rung's peak memory and time, whether it fits, and what to change when it doesn't
(``adaptlab plan CONFIG``; docs/planning.md).

Peak memory (MiB) = baseline + weights + the larger of training (gradients + optimiser states + the activations of
one micro-batch) and scoring (the activations of one inference batch); a rung that scores the validation split as it
trains holds its training state (and a copy of the best weights) while it scores.

- **baseline**: on CPU, this process's resident memory once the libraries are imported and the data is split, which
  is what an ``adaptlab compare`` process holds before its first rung; 0 on CUDA (adaptlab reports torch's allocated
  memory there, which leaves out the CUDA context; whether a rung fits adds :data:`CUDA_CONTEXT_MB`).
- **weights**: the rung's model as set up here (exact bytes; a 4-bit matrix as stored).
- **gradients** 4 bytes and **optimiser** 8 bytes (AdamW's two fp32 states; 2 with ``adamw_8bit``) per trainable
  parameter.
- **activations**: measured per token by a calibration on this machine (:func:`calibrate`: a few gradient steps on
  a few examples, a few predictions), scaled to the rung's batch and the data's longest sequence; for another device
  the formula of :func:`activations_mb`.

Time comes from the same calibration: seconds per gradient step (the first, warming up, not counted) times the
schedule's steps (or the fit on a few examples scaled to the training split), plus seconds per predicted example
times the validation evaluations and the test split.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from adaptlab.cost import measure, release_memory
from adaptlab.methods.base import Footprint

MB = 2**20
#: Values kept per token and layer, in units of the hidden size: the two norms' inputs, q, k, v, the attention
#: output and its projection's input, the residual sums, the dropout masks.
HIDDEN_TERMS = 10
#: ... and in units of the feed-forward width: its input to the activation, the activation's output (and the gate).
FFN_TERMS = 3
#: Values alive per token while scoring (one layer at a time), in units of the hidden size: q, k, v, the output.
SCORING_HIDDEN_TERMS = 4
#: What the CUDA context and kernels take beside the tensors torch allocates.
CUDA_CONTEXT_MB = 600


@dataclass(frozen=True)
class Shape:
    """The base model's size, read from its config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    attention_dropout: bool

    @classmethod
    def of(cls, config: Any) -> Shape:
        c = config.to_dict()

        def first(*keys: str, default: int = 0) -> int:
            return next((int(c[k]) for k in keys if c.get(k) is not None), default)

        hidden = first("hidden_size", "n_embd", "d_model", "dim")
        layers = first("num_hidden_layers", "n_layer", "num_layers", "n_layers")
        layers += first("num_decoder_layers") if c.get("is_encoder_decoder") else 0
        keys = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")
        dropout = max(float(c.get(k) or 0) for k in keys)
        intermediate = first("intermediate_size", "n_inner", "d_ff", "hidden_dim", default=4 * hidden)
        heads = first("num_attention_heads", "n_head", "num_heads", default=1)
        return cls(layers, hidden, intermediate, heads, first("vocab_size"), attention_dropout=dropout > 0)


@dataclass
class RungPlan:
    """One rung's prediction (memory in MiB, time in seconds)."""

    rung: str
    method: str
    trainable: int
    total: int
    baseline_mb: float
    weights_mb: float
    gradients_mb: float
    optimizer_mb: float
    activations_mb: float
    peak_mb: float
    batch: int
    tokens: int
    steps: int | None
    seconds: float | None
    train_seconds: float | None
    fits: bool
    fix: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def activations_mb(fp: Footprint, shape: Shape, element_bytes: int, checkpointing: bool,
                   fused_loss: bool = False) -> tuple[float, float]:
    """(training, scoring) activation MiB of one micro-batch and one scoring batch at the longest sequence;
    ``fused_loss``: Liger's fused linear cross-entropy, which never holds a training batch's vocabulary logits."""
    per_token = HIDDEN_TERMS * shape.hidden + FFN_TERMS * shape.intermediate
    if shape.attention_dropout:
        per_token += 2 * shape.heads * fp.tokens
    kept_layers = fp.backprop_layers * shape.layers
    train_tokens = fp.train_batch * fp.tokens
    if checkpointing and kept_layers:
        train = train_tokens * (shape.hidden * kept_layers + per_token)
    else:
        train = train_tokens * per_token * kept_layers
    if fp.vocab_logits and fp.train_batch and not fused_loss:
        train += 3 * train_tokens * shape.vocab * 4 / element_bytes  # the loss is computed in fp32
    # scoring keeps nothing for a backward pass: one layer's q, k, v, output, attention scores and feed-forward
    # width are alive at a time
    transient = SCORING_HIDDEN_TERMS * shape.hidden + shape.intermediate + shape.heads * fp.tokens
    score = fp.eval_batch * fp.tokens * (transient + (2 * shape.vocab if fp.vocab_logits else 0))
    return train * element_bytes / MB, score * element_bytes / MB


def memory(fp: Footprint, shape: Shape, trainable: int, baseline_mb: float, runtime: Any,
           per_token: tuple[float | None, float | None] = (None, None), validates: bool = False) -> dict[str, float]:
    """The peak and its parts (MiB) for a footprint under a resolved runtime. Training holds the gradients,
    optimiser states and a micro-batch's activations, scoring a batch's activations. ``validates``: training scores
    the validation split as it goes, so a scoring batch meets the training state (and the best weights so far, a
    copy of the trainable ones); otherwise the peak is the larger phase. ``per_token``: activation bytes per token
    a calibration measured here (training, scoring); the formula (:func:`activations_mb`) stands in for what
    wasn't measured."""
    element = 2 if runtime.precision in ("bf16", "fp16") else 4
    train_act, score_act = activations_mb(fp, shape, element, runtime.gradient_checkpointing, runtime.liger)
    if per_token[0] is not None:
        train_act = per_token[0] * fp.train_batch * fp.tokens / MB
    if per_token[1] is not None:
        score_act = per_token[1] * fp.eval_batch * fp.tokens / MB
    trains = fp.train_batch > 0
    grads = 4 * trainable / MB if trains else 0.0
    optim = (2 if runtime.optimizer == "adamw_8bit" else 8) * trainable / MB if trains else 0.0
    weights = fp.weight_bytes / MB
    if runtime.precision in ("bf16", "fp16") and trains:
        weights += 2 * trainable / MB  # autocast's half-precision copies of the (fp32) weights that train
    state = grads + optim + (4 * trainable / MB if trains and validates else 0.0)
    if trains and validates:
        peak, activations = state + max(train_act, score_act), max(train_act, score_act)
    else:
        training = state + train_act if trains else 0.0
        peak, activations = max(training, score_act), train_act if training >= score_act else score_act
    return {"weights_mb": weights, "gradients_mb": grads, "optimizer_mb": optim, "activations_mb": activations,
            "peak_mb": baseline_mb + weights + peak}


#: Training examples a calibration fits on (rungs without gradient steps: their fit is timed on these and scaled).
CALIBRATION_EXAMPLES = 64
#: Gradient steps a calibration times (the first one, which warms up, is not counted).
CALIBRATION_STEPS = 3
#: Test examples whose prediction is timed.
CALIBRATION_PREDICTIONS = 16


@dataclass
class Timing:
    """What a calibration measured: seconds per gradient step, per training example fitted (rungs without
    gradient steps), per test example predicted."""

    step: float | None = None
    per_fit_example: float | None = None
    per_prediction: float = 0.0
    #: activation bytes per token of a training micro-batch and of a scoring batch, measured (CPU: RSS)
    train_bytes_per_token: float | None = None
    score_bytes_per_token: float | None = None


def calibration_params(params: Any) -> Any:
    """The rung's params for a calibration: a few steps, no evaluation, no checkpoints, the last weights."""
    from adaptlab.training import TrainParams

    if not isinstance(params, TrainParams):
        return params
    return params.model_copy(update={"max_steps": CALIBRATION_STEPS, "evals_per_epoch": 0, "logging_steps": 1,
                                     "checkpoint_every_steps": None, "checkpoint_every_minutes": None,
                                     "early_stopping_patience": None, "select_best": "last"})


def calibrate(ladder: Any, method: Any, fp: Footprint, layers: int, extra_mb: float) -> Timing:
    """Fit the set-up ``method`` on a few training examples (a few gradient steps when ``fp`` says it trains) and
    predict a few test examples, timed, with the memory each phase adds (``extra_mb``: gradients and optimiser
    states, which the fit adds besides activations)."""
    import dataclasses

    import numpy as np

    from adaptlab.training import STEP_REPORTER

    data = ladder.data
    pick = np.random.default_rng(ladder.spec.seed).permutation(len(data.train))[:CALIBRATION_EXAMPLES]
    test = data.test.subset(list(range(min(len(data.test), CALIBRATION_PREDICTIONS))))
    small = dataclasses.replace(data, train=data.train.subset(sorted(pick.tolist())),
                                validation=data.validation.subset([]), test=test)
    tokens = method.footprint(small, layers).tokens  # the longest sequence the calibration's batches can pad to
    if fp.train_batch and method.predicts and len(test):
        ladder.task.predict(method, test.subset([0]))  # reads every weight: what the fit adds is not their arrival
        release_memory()
    ends: list[float] = []
    token = STEP_REPORTER.set(lambda step, total, loss: ends.append(time.perf_counter()))
    try:
        with tempfile.TemporaryDirectory() as tmp, measure() as fitting:
            method.fit(small, Path(tmp))
    finally:
        STEP_REPORTER.reset(token)
    timing = Timing()
    if fp.train_batch and len(ends) >= 2:
        batch = min(fp.train_batch, len(pick))  # a batch larger than the calibration's examples: scaled up
        timing.step = (ends[-1] - ends[0]) / (len(ends) - 1) * fp.train_batch / batch
        added = (fitting.peak_rss_mb - fitting.start_rss_mb - extra_mb) * MB
        timing.train_bytes_per_token = max(0.0, added) / (batch * tokens)
    else:
        timing.per_fit_example = fitting.seconds / max(1, len(pick))
    if len(test) and method.predicts:
        timing.per_prediction, timing.score_bytes_per_token = _scoring(ladder, method, test, fp.eval_batch, tokens)
    return timing


def _scoring(ladder: Any, method: Any, test: Any, batch: int, tokens: int) -> tuple[float, float]:
    """(seconds per example, activation bytes per token) of prediction: the memory a batch adds is the difference
    between a small and a larger batch (what any call adds, a constant, drops out)."""
    ladder.task.predict(method, test.subset([0]))  # warm-up
    sizes = sorted({max(1, min(batch, len(test)) // 4), min(batch, len(test))})
    added, seconds = [], 0.0
    for n in sizes:
        release_memory()
        with measure() as scoring:
            ladder.task.predict(method, test.subset(list(range(n))))
        added.append((scoring.peak_rss_mb - scoring.start_rss_mb) * MB)
        seconds = scoring.seconds / n
    if len(sizes) == 2:
        per_token = (added[1] - added[0]) / ((sizes[1] - sizes[0]) * tokens)
    else:
        per_token = added[0] / (sizes[0] * tokens)
    return seconds, max(0.0, per_token)


def significant(seconds: float) -> float:
    """``seconds`` to three significant figures: a tiny rung's fraction of a second must not round to zero."""
    return float(f"{seconds:.3g}")


def predicted_seconds(timing: Timing, steps: int | None, train_examples: int, evaluations: int,
                      validation: int, test: int) -> tuple[float, float]:
    """(training, test predictions) seconds from a calibration: the steps (or the fit scaled to the training split)
    and the validation evaluations; the test split's predictions."""
    fit = (steps or 0) * timing.step if timing.step is not None else \
        (timing.per_fit_example or 0.0) * train_examples
    return fit + timing.per_prediction * evaluations * validation, timing.per_prediction * test


def suggest(fp: Footprint, shape: Shape, trainable: int, baseline: float, runtime: Any, budget: float,
            advice: Advice, per_token: tuple[float | None, float | None] = (None, None),
            validates: bool = False) -> str | None:
    """The first change that makes a rung fit ``budget`` MiB: gradient checkpointing, a smaller micro-batch with
    more accumulation (the same examples per optimizer step), the rung's 4-bit variant; None when none does.
    ``per_token`` as in :func:`memory` (with checkpointing, measured training activations shrink as the formula's)."""

    def peak(f: Footprint, rt: Any = runtime, measured: tuple = per_token) -> float:
        return memory(f, shape, trainable, baseline, rt, measured, validates)["peak_mb"]

    if advice.checkpointable and not runtime.gradient_checkpointing and fp.train_batch:
        plain, kept = (activations_mb(fp, shape, 4, c)[0] for c in (False, True))
        shrunk = (per_token[0] * kept / plain if per_token[0] is not None and plain else None, per_token[1])
        if peak(fp, replace(runtime, gradient_checkpointing=True), shrunk) <= budget:
            return "runtime: {gradient_checkpointing: true}"
    k = 2
    while fp.train_batch and fp.train_batch // k >= 1:
        smaller = replace(fp, train_batch=fp.train_batch // k, eval_batch=max(1, min(fp.eval_batch,
                                                                                    fp.train_batch // k)))
        if peak(smaller) <= budget:
            return (f"params: {{batch_size: {smaller.train_batch}, gradient_accumulation_steps: "
                    f"{k * advice.accumulation}}} (and eval_batch_size {smaller.eval_batch})")
        k *= 2
    if advice.four_bit and fp.train_batch:
        if peak(replace(fp, weight_bytes=four_bit_bytes(fp, shape))) <= budget:
            return f"method: {advice.four_bit} (a 4-bit base)"
    return None


def four_bit_bytes(fp: Footprint, shape: Shape) -> int:
    """The weights with the layers' linear matrices in NF4 (about 4.5 bits a value with their scales) and the rest
    (embeddings, norms: peft's k-bit preparation holds them in fp32) at 4 bytes a value."""
    embeddings = shape.vocab * shape.hidden
    per_layer = 4 * shape.hidden * shape.hidden + 3 * shape.hidden * shape.intermediate  # attention + gated MLP
    linear = min(shape.layers * per_layer, max(0, fp.weight_bytes // 2 - embeddings))  # of a 16-bit base at most
    return int(linear * 4.5 / 8 + embeddings * 4)


@dataclass(frozen=True)
class Advice:
    """What :func:`suggest` may change for a rung."""

    checkpointable: bool = False
    accumulation: int = 1
    four_bit: str | None = None


def device_memory_mb(device: str) -> float:
    """The memory of ``device``: this machine's RAM for cpu, the GPU's for cuda[:N] (when present)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        return torch.cuda.get_device_properties(index).total_memory / MB
    return psutil.virtual_memory().total / MB


def parse_size(text: str) -> float:
    """MiB from '24GiB', '24GB', '800MiB', '800M', '24G' or a plain number of MiB."""
    units = {"t": 2**20, "g": 2**10, "m": 1, "k": 2**-10}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = units.get(value[-1:], None)
    from adaptlab.errors import UserError

    try:
        size = float(value[:-1]) * unit if unit else float(value)
    except ValueError:
        size = math.nan
    if not math.isfinite(size) or size <= 0:
        raise UserError(f"memory size '{text}' not understood; write a positive size like 24GiB, 800MiB or 16G.")
    return size


def plan_rung(ladder: Any, rung: Any, device: str, budget: float) -> RungPlan:
    """Set the rung up (weights loaded, nothing trained beyond a short calibration) and predict its peak and time
    on ``device``."""
    from adaptlab.config import rung_params
    from adaptlab.cost import release_memory
    from adaptlab.generation import lm
    from adaptlab.methods import METHODS
    from adaptlab.pipeline import rung_runtime
    from adaptlab.runtime import RUNTIME, cpu_kernels
    from adaptlab.training import Schedule, TrainParams

    ladder.ctx.reset_caches()  # as the pipeline does before each rung
    release_memory()
    baseline = 0.0 if device.startswith("cuda") else psutil.Process().memory_info().rss / MB
    runtime = rung_runtime(ladder, rung, device)
    shape = Shape.of(lm.load_config(ladder.ctx.model, ladder.ctx.trust_remote_code))
    params, cls = rung_params(rung), METHODS.get(rung.method)
    method = cls(calibration_params(params), ladder.ctx)
    with cpu_kernels(runtime, method.computes_in_half()):  # as the rung will run
        token = RUNTIME.set(runtime)
        try:
            method.setup()
            if not method.trains:  # prompting rungs pick their in-context examples when fitted (cheap: no training)
                with tempfile.TemporaryDirectory() as tmp:
                    method.fit(ladder.data, Path(tmp))
            trainable, total = method.parameter_counts()
            fp = _within_data(method.footprint(ladder.data, shape.layers), ladder.data)
            here = device.split(":")[0] == ladder.ctx.torch_device.split(":")[0] and not device.startswith("cuda")
            extra = memory(fp, shape, trainable, 0.0, runtime)
            state_mb = extra["gradients_mb"] + extra["optimizer_mb"]
            timing, note = _calibration(ladder, method, fp, shape.layers, state_mb) if here else \
                (None, f"not calibrated on {device} here: memory from the formula, no time")
        finally:
            RUNTIME.reset(token)
            del method
    measured = (timing.train_bytes_per_token, timing.score_bytes_per_token) if timing else (None, None)
    gradient = isinstance(params, TrainParams)
    schedule = Schedule.resolve(params, len(ladder.data.train)) if gradient and fp.train_batch else None
    steps = schedule.steps if schedule else None
    evaluations = _evaluations(params, schedule, len(ladder.data.validation))
    parts = memory(fp, shape, trainable, baseline, runtime, measured, validates=evaluations > 0)
    secs = predicted_seconds(timing, steps, len(ladder.data.train), evaluations, len(ladder.data.validation),
                             len(ladder.data.test)) if timing else None
    limit = budget - (CUDA_CONTEXT_MB if device.startswith("cuda") else 0)
    fits = parts["peak_mb"] <= limit
    advice = Advice("gradient_checkpointing" in cls.runtime_options,
                    params.gradient_accumulation_steps if gradient else 1, cls.four_bit_variant)
    fix = None if fits else suggest(fp, shape, trainable, baseline, runtime, limit, advice, measured, evaluations > 0)
    notes = list(runtime.notes) + ([note] if note else [])
    return RungPlan(rung.run_name, rung.method, trainable, total, round(baseline, 1), **{
        k: round(v, 1) for k, v in parts.items()}, batch=fp.train_batch or fp.eval_batch, tokens=fp.tokens,
        steps=steps, seconds=significant(sum(secs)) if secs else None,
        train_seconds=significant(secs[0]) if secs else None,
        fits=fits, fix=fix, notes=notes)


def _within_data(fp: Footprint, data: Any) -> Footprint:
    """A training batch is never larger than the training split: batch_size 100000 on 28 examples trains on 28.
    (Scoring batches are left as they are: some rungs score the training split too, e.g. embedding it.)"""
    return replace(fp, train_batch=min(fp.train_batch, len(data.train)))


def _calibration(ladder: Any, method: Any, fp: Footprint, layers: int,
                 extra_mb: float) -> tuple[Timing | None, str | None]:
    """The calibration, or None and why it couldn't run (e.g. a rung that needs another rung's output)."""
    try:
        return calibrate(ladder, method, fp, layers, extra_mb), None
    except Exception as exc:  # noqa: BLE001 - the plan still gives memory; the reason is shown
        return None, f"time: calibration failed ({type(exc).__name__}: {exc})"


def _evaluations(params: Any, schedule: Any, validation: int) -> int:
    """Validation evaluations the training will run (evals_per_epoch a pass, when there is a validation split)."""
    if schedule is None or not validation or not params.evals_per_epoch:
        return 0
    every = max(1, schedule.steps_per_epoch // params.evals_per_epoch)
    return schedule.steps // every


def plan(ladder: Any, device: str | None = None, memory_mb: float | None = None,
         only: list[str] | None = None) -> dict[str, Any]:
    """Every rung's plan (in ladder order) on ``device`` (default: the ladder's) within ``memory_mb`` (default:
    the device's memory)."""
    device = device or ladder.ctx.torch_device
    budget = memory_mb if memory_mb is not None else device_memory_mb(device)
    rungs = [r for r in ladder.spec.rungs if only is None or r.run_name in only]
    plans = [plan_rung(ladder, r, device, budget) for r in rungs]
    return {"device": device, "memory_mb": round(budget, 1), "rungs": [p.to_dict() for p in plans],
            "model": ladder.spec.model, "max_length": ladder.spec.data.max_length}
