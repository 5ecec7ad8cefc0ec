"""Gradient training for every rung that trains weights, on top of the transformers Trainer.

The Trainer brings what users expect and we should not rewrite: accelerate (DDP, FSDP, DeepSpeed through
``accelerate launch``), TensorBoard logs, optimizer/scheduler/RNG checkpoints and exact resume. adaptlab adds:
checkpoints written atomically (temporary folder, fsync, rename), checkpoints every N minutes, and a guard that
stops a rung whose loss stops being finite with the step, learning rate and a suggestion. Any Trainer subclass
(trl, sentence-transformers) gets the same: :func:`train` takes the class and its arguments class.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from adaptlab.distributed import (
    ShardedFit,
    agree_on_main,
    rank,
    read_whole,
    resharded,
    trainer_fields,
    weights_sharded,
    write_whole,
)
from adaptlab.errors import TrainingError
from adaptlab.runtime import RUNTIME

CHECKPOINTS = "checkpoints"
#: ``group_by_length: null`` groups batches by length from this many training examples on.
GROUP_BY_LENGTH_FROM = 4000
#: ``epochs: null`` trains for at least this many optimizer steps unless the task or the rung says otherwise.
DEFAULT_MIN_STEPS = 150


class TrainParams(BaseModel):
    """Hyperparameters shared by every rung that trains weights with gradient descent."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    epochs: float | None = Field(
        None, gt=0, le=1000, description="Passes over the training split (at most 1000). Default (null): as many "
        "whole passes as it takes to reach min_steps optimizer steps (at least 1, at most max_auto_epochs), so small "
        "data still trains enough.",
    )
    min_steps: int | None = Field(
        None, gt=0, description="With epochs null: the fewest optimizer steps to train for. Default (null): the "
        f"task's choice ({DEFAULT_MIN_STEPS} for classification, 500 for token classification, where each word is a "
        "decision and most are O).")
    max_auto_epochs: int = Field(20, gt=0, description="With epochs null: the most passes min_steps may ask for.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(5e-5, gt=0, lt=1, description="Peak learning rate.")
    batch_size: int = Field(16, gt=0, description="Examples per optimizer step (per device).")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches accumulated per step.")
    eval_batch_size: int = Field(128, gt=0, description="Examples per forward pass at evaluation.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Fraction of steps with linear warm-up.")
    lr_scheduler: str = Field("linear", description="transformers scheduler name: linear, cosine, constant, ...")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    evals_per_epoch: int = Field(2, ge=0, description="Validation-loss evaluations per epoch (0: none).")
    logging_steps: int = Field(10, gt=0, description="Log training loss every N steps.")
    checkpoint_every_steps: int | None = Field(None, gt=0, description="Checkpoint every N steps (for resume).")
    checkpoint_every_minutes: float | None = Field(None, gt=0, description="Checkpoint every N minutes of training.")
    group_by_length: bool | None = Field(
        None, description="Batch texts of similar length together (less padding, faster). Default (null): only when "
        f"the training split has at least {GROUP_BY_LENGTH_FROM} examples; on small data length-sorted batches mix "
        "classes less (texts of one class are often of similar length) and learn worse.",
    )
    select_best: Literal["metric", "loss", "last"] = Field(
        "metric", description="Which weights the rung keeps, judged at the validation evaluations "
        "(evals_per_epoch): metric: those of the evaluation with the best task primary metric on the validation "
        "split (macro-F1, ROUGE-L, entity F1...); loss: the lowest validation loss; last: the final weights. Ties go "
        "to the later evaluation. Without a validation split (or evaluations) the final weights are kept.",
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop training after this many validation evaluations in a row that do not beat "
        "the best score so far (the select_best score; with last, the metric). Default (null): never stop early.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        """Runs and bundles recorded before the runtime section hold ``precision`` in their params: still readable
        (a ladder config that sets it is told where it went, see config.parse_ladder)."""
        if isinstance(data, dict) and "precision" in data:
            data = {k: v for k, v in data.items() if k != "precision"}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainParams:
        from transformers.trainer_utils import SchedulerType

        names = [s.value for s in SchedulerType]
        if self.lr_scheduler not in names:
            from adaptlab.errors import did_you_mean

            raise ValueError(f"lr_scheduler '{self.lr_scheduler}' unknown.{did_you_mean(self.lr_scheduler, names)}")
        return self


class ClassifierTrainParams(TrainParams):
    """Training settings of the rungs that train a classification head: the loss can weight rare classes."""

    class_weight: Literal["balanced", "none"] | None = Field(
        None, description="balanced: weight each class's loss by n / (classes x its count), so a rare class "
        "counts as much as a common one; none: plain cross-entropy. Default (null): the task's choice, balanced for "
        "classification, none for token classification (where O dominates).",
    )


@dataclass(frozen=True)
class Schedule:
    """What a training run will actually do, resolved from its params and the data size (recorded in the run)."""

    examples: int
    batch_size: int
    steps_per_epoch: int
    epochs: float
    steps: int
    group_by_length: bool

    @classmethod
    def resolve(cls, params: TrainParams, examples: int) -> Schedule:
        batch = params.batch_size * params.gradient_accumulation_steps
        per_epoch = max(1, math.ceil(examples / batch))
        epochs = params.epochs
        if epochs is None:
            wanted = params.min_steps or DEFAULT_MIN_STEPS
            epochs = float(min(params.max_auto_epochs, max(1, math.ceil(wanted / per_epoch))))
        steps = params.max_steps or math.ceil(per_epoch * epochs)
        grouped = params.group_by_length
        if grouped is None:
            grouped = examples >= GROUP_BY_LENGTH_FROM
        return cls(examples, batch, per_epoch, epochs, steps, grouped)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def balanced_class_weights(labels: Any, num_labels: int) -> list[float]:
    """scikit-learn's 'balanced' weights, n / (k * count); a class absent from training gets weight 1."""
    import numpy as np

    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels).astype(float)
    present = counts > 0
    weights = np.ones(num_labels)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return [float(w) for w in weights]


class WeightedCrossEntropy:
    """``compute_loss_func`` for the Trainer: cross-entropy with fixed per-class weights."""

    def __init__(self, weights: list[float]):
        self.weights = torch.tensor(weights, dtype=torch.float32)

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        weight = self.weights.to(device=logits.device, dtype=torch.float32)
        return torch.nn.functional.cross_entropy(logits.float(), labels.to(logits.device), weight=weight)


class NonFiniteLossGuard(TrainerCallback):
    """Stop training as soon as a logged loss is NaN or infinite."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            lr = (logs or {}).get("learning_rate", args.learning_rate)
            raise TrainingError(
                f"the training loss became {loss} at step {state.global_step} (learning rate {lr:.3g}). "
                "Try a lower learning_rate (e.g. 10x smaller), more warmup_ratio, or check the data for empty texts."
            )


#: Set by the pipeline: called with (step, total_steps, last_loss) as training goes, e.g. to update a status line.
STEP_REPORTER: contextvars.ContextVar[Callable[[int, int, float | None], None] | None] = contextvars.ContextVar(
    "STEP_REPORTER", default=None
)


class StepReporter(TrainerCallback):
    def __init__(self, report: Callable[[int, int, float | None], None]):
        self.report, self.loss = report, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.loss = (logs or {}).get("loss", self.loss)

    def on_step_end(self, args, state, control, **kwargs):
        self.report(state.global_step, state.max_steps, self.loss)


@dataclass(frozen=True)
class ValidationScorer:
    """Scores the model being trained on the validation split with the task's metric (set by the pipeline).

    ``score()`` predicts the validation split with the model as it is now and returns ``metric`` (the task's
    primary metric, no intervals); ``higher_is_better`` is that metric's direction.
    """

    metric: str
    higher_is_better: bool
    score: Callable[[], float]


#: Set by the pipeline for the rung being fitted: how :func:`train` scores validation with the task's metric.
VALIDATION_SCORER: contextvars.ContextVar[ValidationScorer | None] = contextvars.ContextVar(
    "VALIDATION_SCORER", default=None
)
#: Set by the pipeline while a rung fits: loads a finished rung from its folder (``<output>/<rung>``) as
#: (task, method ready to predict, run.json), or an exported classifier bundle as (None, its predictor, manifest).
#: Rungs that learn from another finished run (``grpo``'s reward) ask it; methods can't import the pipeline.
FINISHED_RUNS: contextvars.ContextVar[Callable[[Path], tuple] | None] = contextvars.ContextVar(
    "FINISHED_RUNS", default=None
)
#: Files of the selection state inside a checkpoint: the best weights so far and the bookkeeping around them.
SELECTION_WEIGHTS, SELECTION_STATE = "selection.safetensors", "selection.json"


class TimedCheckpoints(TrainerCallback):
    """Ask for a checkpoint whenever `minutes` of training have passed since the last one."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        due = time.monotonic() - self.last >= self.seconds
        if agree_on_main(due) if args.world_size > 1 else due:  # every process saves at the same step
            control.should_save = True
            self.last = time.monotonic()
        return control


@contextlib.contextmanager
def _random_state_kept() -> Iterator[None]:
    """Run a block without moving the random generators training draws from (generation reseeds torch's): the
    steps after a validation scoring, and a run resumed from a checkpoint, draw the same numbers as without it."""
    import random

    import numpy as np

    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
        if saved[3] is not None:
            torch.cuda.set_rng_state_all(saved[3])


def _main_value(value: float) -> float:
    """The main process's ``value`` in every process (training on several, e.g. DDP): each scores the validation
    split itself, and all must keep the same weights and stop at the same step."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return float(box[0])


class ValidationSelection(TrainerCallback):
    """Keeps the weights of the best validation evaluation, and stops training early (patience).

    At each validation evaluation (``on_evaluate``, whose metrics hold the validation loss) it scores the model with
    the task's metric when a :class:`ValidationScorer` is set (model in eval mode, random generators untouched, then
    back to the mode it was in), adds ``eval_<metric>`` to that evaluation's metrics and log entry (the curve in the
    history), and compares the watched score (``monitor``: "metric" or "loss") with the best so far.

    Ties: an evaluation that equals the best replaces it (the later one wins). A flat metric, e.g. a small-data
    classifier that predicts one class for a while or for the whole run, then keeps the weights that trained
    longest among the equally good ones, never a barely trained early step; with a metric that never moves the rung
    ends as it would with ``last``. For patience a tie is no improvement: ``patience`` evaluations in a row that do
    not strictly beat the best stop training.

    ``by`` "metric" or "loss" keeps a copy of the trainable parameters (``requires_grad``) of the best evaluation and
    loads it into the model at the end of training; "last" keeps the final weights (only watching, for patience).
    That copy and the bookkeeping are written into every checkpoint, inside its atomic write
    (:data:`SELECTION_WEIGHTS`, :data:`SELECTION_STATE`), so a run resumed from a checkpoint knows the best as of
    that step and ends with the same weights and record as a run never interrupted.
    """

    def __init__(self, model: torch.nn.Module, by: str, monitor: str, scorer: ValidationScorer | None,
                 patience: int | None):
        self.model, self.by, self.monitor, self.scorer, self.patience = model, by, monitor, scorer, patience
        self.metric_key = f"eval_{scorer.metric}" if scorer is not None else None
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.evaluations = self.stale = 0
        self.stopped_early_at: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics if metrics is not None else {}
        if self.scorer is not None:
            metrics[self.metric_key] = value = _main_value(self._score())
            last = state.log_history[-1] if state.log_history else None
            if last is not None and last.get("step") == state.global_step:  # the entry Trainer.evaluate just logged
                last[self.metric_key] = value
            else:
                state.log_history.append({self.metric_key: value, "step": state.global_step, "epoch": state.epoch})
        self.evaluations += 1
        self._judge(state.global_step, metrics.get(self.metric_key if self.monitor == "metric" else "eval_loss"))
        if self.patience and self.stale >= self.patience and self.stopped_early_at is None:
            control.should_training_stop = True
            self.stopped_early_at = state.global_step
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.by != "last" and self.best_weights is not None:
            own = self._trainable()
            for name, value in self.best_weights.items():
                write_whole(own[name], value)

    def _score(self) -> float:
        training = self.model.training
        self.model.eval()
        try:
            with _random_state_kept(), torch.no_grad():
                return float(self.scorer.score())
        finally:
            self.model.train(training)

    def _judge(self, step: int, value: Any) -> None:
        """Compare one evaluation's watched score with the best so far (see the class docstring for ties)."""
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            self.stale += 1
            return
        higher = self.monitor == "metric" and self.scorer.higher_is_better  # a loss: lower is better
        gain = (value - self.best_value) * (1 if higher else -1) if self.best_value is not None else math.inf
        if gain < 0:
            self.stale += 1
            return
        self.stale = 0 if gain > 0 else self.stale + 1
        self.best_step, self.best_value = step, float(value)
        if self.by != "last":
            self.best_weights = {}
            for name, p in self._trainable().items():  # every process judges alike, so all gather sharded weights
                self.best_weights[name] = read_whole(p)  # one at a time: beside the training states, one weight more

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        """The trainable weights as the fit holds them (under FSDP: each in its slice, see :func:`resharded`)."""
        return {n: p for n, p in resharded(self.model).named_parameters() if p.requires_grad}

    def _bookkeeping(self) -> dict[str, Any]:
        return {"by": self.by, "monitor": self.monitor, "best_step": self.best_step, "best_value": self.best_value,
                "evaluations": self.evaluations, "stale": self.stale, "stopped_early_at": self.stopped_early_at}

    def save(self, folder: Path) -> None:
        """Write the best weights so far and the bookkeeping into a checkpoint folder being written."""
        import json

        from safetensors.torch import save_file

        if self.best_weights is not None:
            save_file(self.best_weights, folder / SELECTION_WEIGHTS)
        (folder / SELECTION_STATE).write_text(json.dumps(self._bookkeeping()), encoding="utf-8")

    def load(self, folder: Path) -> None:
        """Continue from what :meth:`save` wrote into ``folder``; state of another rule (by, monitor) is ignored."""
        import json

        from safetensors.torch import load_file

        state_file = folder / SELECTION_STATE
        saved = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else None
        if not saved or (saved["by"], saved["monitor"]) != (self.by, self.monitor):
            return
        self.best_step, self.best_value, self.stale = saved["best_step"], saved["best_value"], saved["stale"]
        self.evaluations, self.stopped_early_at = saved["evaluations"], saved["stopped_early_at"]
        weights = folder / SELECTION_WEIGHTS
        self.best_weights = load_file(weights) if weights.is_file() else None


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())


class EpochSeededLengthGroupedSampler(torch.utils.data.Sampler):
    """Length-grouped batches whose order depends only on (seed, epoch).

    transformers' LengthGroupedSampler draws from the global RNG, whose state on resume is the checkpoint's, not
    the epoch start's, so a resumed run would see other batches. Seeding per epoch makes resume exact.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class AtomicCheckpoints:
    """Mixin for any Trainer class: checkpoints appear complete or not at all, and resume is exact.

    A checkpoint is written by the Trainer class's own ``_save_checkpoint`` (so whatever a subclass adds, a trl
    model card, a sentence-transformers module layout, an extra state file, is in it) into a scratch folder, then
    fsynced and renamed to ``checkpoint-N`` only after every file is on disk: a crash mid-write leaves no
    checkpoint that resume would trust. It must come first in the class's bases (see :func:`atomic_trainer_class`)
    so that it wraps every ``_save_checkpoint`` of the classes after it.
    """

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        inherited = super()._get_train_sampler
        if (self.args.train_sampling_strategy == "group_by_length" and "input_ids" in dataset.column_names
                and getattr(inherited, "__func__", None) is Trainer._get_train_sampler):
            # only where the class keeps transformers' sampler: trl's GRPO/KTO samplers are theirs to keep
            lengths = [len(x) for x in dataset["input_ids"]]
            # the whole optimizer step's examples (all processes'): grouped as on one process
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            return EpochSeededLengthGroupedSampler(lengths, batch, self.args.data_seed or self.args.seed)
        return inherited(train_dataset)

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        run_dir = Path(self._get_output_dir(trial=trial))
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        tmp = run_dir / f"tmp-{final.name}"
        real_output_dir = self.args.output_dir
        # Let the base classes write into a scratch run dir, then move the finished checkpoint into place. On
        # several processes each writes its part (its RNG state) and the main process alone moves files.
        scratch = run_dir / ".scratch"
        main = self.accelerator.is_main_process
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.args.output_dir = str(scratch)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = real_output_dir
        self.accelerator.wait_for_everyone()
        written = scratch / final.name
        for callback in self.callback_handler.callbacks if main else ():  # the best weights so far go with it
            if isinstance(callback, ValidationSelection):
                callback.save(written)
        _fault_point(f"checkpoint:{self.state.global_step}")
        if main:
            self._publish_checkpoint(run_dir, written, tmp, final, scratch)
        self.accelerator.wait_for_everyone()

    @staticmethod
    def _publish_checkpoint(run_dir: Path, written: Path, tmp: Path, final: Path, scratch: Path) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        _fsync_tree(written)
        written.rename(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        shutil.rmtree(scratch, ignore_errors=True)
        for old in sorted(run_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1])):
            if old != final:  # keep only the newest complete checkpoint
                shutil.rmtree(old, ignore_errors=True)


class AtomicTrainer(AtomicCheckpoints, Trainer):
    """The transformers Trainer with atomic checkpoints and exact resume."""


@functools.cache
def atomic_trainer_class(trainer_cls: type[Trainer]) -> type[Trainer]:
    """``trainer_cls`` with :class:`AtomicCheckpoints` in front of its bases (built once per class).

    A subclass rather than a patched instance, so ``super()`` inside trl's or sentence-transformers' own overrides
    still reaches transformers, and the scratch-folder swap wraps all of them.
    """
    if issubclass(trainer_cls, AtomicCheckpoints):
        return trainer_cls
    if trainer_cls is Trainer:
        return AtomicTrainer
    if not issubclass(trainer_cls, Trainer):
        raise TypeError(f"trainer_cls must be a transformers Trainer subclass, not {trainer_cls!r}")
    return type(f"Atomic{trainer_cls.__name__}", (AtomicCheckpoints, trainer_cls),
                {"__module__": __name__, "__doc__": f"{trainer_cls.__name__} with atomic checkpoints."})


def _fault_point(name: str) -> None:
    """Crash-test hook: ``ADAPTLAB_FAULT=checkpoint:N`` kills the process (SIGKILL) while checkpoint N is half
    written (on several processes only the one whose RANK is ``ADAPTLAB_FAULT_RANK``, when that is set). Used by the
    crash/resume tests; inert unless that variable is set."""
    if os.environ.get("ADAPTLAB_FAULT") == name and os.environ.get("ADAPTLAB_FAULT_RANK") in (None, str(rank())):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def last_checkpoint(workdir: Path) -> Path | None:
    """The newest complete checkpoint under ``workdir``, ignoring half-written ones."""
    root = workdir / CHECKPOINTS
    done = [p for p in root.glob("checkpoint-*") if (p / "trainer_state.json").is_file()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1])) if done else None


def training_arguments(params: TrainParams, schedule: Schedule, workdir: Path, eval_steps: int | None, seed: int,
                       use_cpu: bool, args_cls: type[TrainingArguments] = TrainingArguments,
                       **extra: Any) -> TrainingArguments:
    """The Trainer's arguments for these params and the resolved schedule.

    ``args_cls`` is the arguments class the Trainer class wants (trl's ``SFTConfig``, sentence-transformers'
    ``SentenceTransformerTrainingArguments``); ``extra`` sets its own fields (e.g. ``max_length``, ``batch_sampler``)
    or overrides ours. Everything is given explicitly, so a subclass's other defaults (trl: bf16 on) do not leak in.
    """
    save_steps = params.checkpoint_every_steps
    fields: dict[str, Any] = dict(
        output_dir=str(workdir / CHECKPOINTS),
        num_train_epochs=schedule.epochs,
        max_steps=params.max_steps or -1,
        learning_rate=params.learning_rate,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.eval_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        weight_decay=params.weight_decay,
        warmup_steps=float(params.warmup_ratio),  # a float in [0, 1) is a ratio of total steps
        logging_nan_inf_filter=False,  # the guard must see a NaN loss, not a filtered one
        lr_scheduler_type=params.lr_scheduler,
        max_grad_norm=params.max_grad_norm,
        logging_steps=params.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        seed=seed,
        data_seed=seed,
        train_sampling_strategy="group_by_length" if schedule.group_by_length else "random",
        report_to=["tensorboard"],
        dataloader_num_workers=0,
        use_cpu=use_cpu,
        disable_tqdm=True,
        remove_unused_columns=False,
        **RUNTIME.get().trainer_args(),
    )
    return args_cls(**{**fields, **extra})


def _callbacks(params: TrainParams) -> list[TrainerCallback]:
    """adaptlab's callbacks, added to whatever the Trainer class brings: the guard, timed checkpoints, progress."""
    callbacks: list[TrainerCallback] = [NonFiniteLossGuard()]
    if params.checkpoint_every_minutes:
        callbacks.append(TimedCheckpoints(params.checkpoint_every_minutes))
    if STEP_REPORTER.get() is not None:
        callbacks.append(StepReporter(STEP_REPORTER.get()))
    return callbacks


def _num_examples(dataset: Any) -> int:
    """Training examples in a dataset, or in all datasets of a dict of them (sentence-transformers multi-task)."""
    return sum(len(d) for d in dataset.values()) if isinstance(dataset, dict) else len(dataset)


def _build_trainer(trainer_cls: type[Trainer], workdir: Path, loss_func: Callable[..., torch.Tensor] | None,
                   **kwargs: Any) -> Trainer:
    """An atomic-checkpoint subclass of ``trainer_cls``, built with TensorBoard logging into ``workdir``.

    ``compute_loss_func`` is passed only when set: sentence-transformers' trainer takes a ``loss`` instead.
    """
    if loss_func is not None:
        kwargs["compute_loss_func"] = loss_func
    old_tb = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(workdir / "tensorboard")  # read once, when the Trainer is built
    try:
        trainer = atomic_trainer_class(trainer_cls)(**kwargs)
    finally:
        if old_tb is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = old_tb
    trainer.remove_callback(PrinterCallback)  # raw log dicts on stdout; progress goes through STEP_REPORTER
    if loss_func is not None:  # a per-batch mean: the Trainer must divide it by the accumulation steps itself
        trainer.loss_is_scaled_for_ga = False
    return trainer


def train(
    model: Any,
    *,
    params: TrainParams,
    train_dataset: Any,
    eval_dataset: Any | None,
    collator: Any = None,
    workdir: Path,
    seed: int,
    use_cpu: bool,
    resume: bool,
    loss_func: Callable[..., torch.Tensor] | None = None,
    trainer_cls: type[Trainer] = Trainer,
    trainer_kwargs: dict[str, Any] | None = None,
    args_cls: type[TrainingArguments] | None = None,
    args_kwargs: dict[str, Any] | None = None,
    history_keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train ``model`` in place with ``trainer_cls``; returns {"history", "train_seconds", "samples", "steps",
    "selection", ...}.

    Any transformers Trainer subclass works (trl's ``SFTTrainer``/``DPOTrainer``, sentence-transformers'
    ``SentenceTransformerTrainer``): it is subclassed with :class:`AtomicCheckpoints`, and gets the loss guard,
    timed checkpoints and progress callbacks. ``trainer_kwargs`` go to its constructor (``processing_class``,
    ``ref_model``, ``loss``, ``peft_config``, ...). ``args_cls`` is its arguments class (default: the class's
    ``training_args_class`` if it names one, as sentence-transformers' do, else ``TrainingArguments``), with
    ``args_kwargs`` for that class's own fields. ``collator`` None leaves the class's default collator.
    ``loss_func`` replaces the model's own loss (the Trainer's ``compute_loss_func``), e.g. class-weighted.
    ``history_keys``: keys the trainer class logs beyond :data:`HISTORY_KEYS` to keep in the history (e.g. GRPO's
    ``reward`` and ``kl``).

    At the validation evaluations the weights kept are chosen by ``params.select_best`` and training may stop early
    (``params.early_stopping_patience``), see :class:`ValidationSelection`; the task's metric comes from
    :data:`VALIDATION_SCORER` (without it, ``select_best: metric`` keeps the final weights). ``selection`` says
    what was kept: {"by", "requested", "metric", "best_step", "best_value", "kept_step", "evaluations",
    "stopped_early_at", "patience", "note"}; the history holds ``eval_<metric>`` at each evaluation.
    """
    schedule = Schedule.resolve(params, _num_examples(train_dataset))
    eval_steps = _eval_steps(params, schedule, eval_dataset)
    args_cls = args_cls or getattr(trainer_cls, "training_args_class", TrainingArguments)
    extra = {**trainer_fields(params.batch_size, loss_func is not None, use_cpu, model), **(args_kwargs or {})}
    use_cpu = extra.pop("use_cpu", use_cpu)  # DeepSpeed on CPU runs outside accelerate's cpu mode
    args = training_arguments(params, schedule, workdir, eval_steps, seed, use_cpu, args_cls, **extra)
    with ShardedFit(model) as sharded:  # FSDP, ZeRO-3: gathered after the fit; the engine detached however it ends
        _refuse_sharded_reference(trainer_kwargs or {})
        plan = SelectionPlan.resolve(params, VALIDATION_SCORER.get(), evaluates=eval_steps is not None)
        selection = plan.callback(model, params.early_stopping_patience)
        trainer = sharded.watch(_build_trainer(
            trainer_cls, workdir, loss_func, model=model, args=args, train_dataset=train_dataset,
            eval_dataset=eval_dataset if eval_steps else None, data_collator=collator,
            callbacks=_callbacks(params) + ([selection] if selection else []), **(trainer_kwargs or {}),
        ))
        checkpoint = last_checkpoint(workdir) if resume else None
        if checkpoint is not None and selection is not None:
            selection.load(checkpoint)
        start = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        seconds = time.perf_counter() - start
        sharded.gather()
    final_loss = output.training_loss
    if not math.isfinite(final_loss):
        raise TrainingError(f"the mean training loss is {final_loss}; lower the learning_rate.")
    result = _result(trainer, schedule, _num_examples(train_dataset), seconds, checkpoint, selection, history_keys)
    return {**result, "selection": plan.record(params, selection, trainer.state.global_step)}


def _eval_steps(params: TrainParams, schedule: Schedule, eval_dataset: Any | None) -> int | None:
    """Steps between validation evaluations (None: no validation split, or evals_per_epoch 0)."""
    if eval_dataset is None or not len(eval_dataset) or not params.evals_per_epoch:
        return None
    return max(1, schedule.steps_per_epoch // params.evals_per_epoch)


def _refuse_sharded_reference(trainer_kwargs: dict[str, Any]) -> None:
    """A second model handed to the Trainer (trl's ``ref_model``) would be sharded by FSDP or ZeRO-3 too, and only the
    trained model is gathered back (:class:`ShardedFit`) for the main process to evaluate alone."""
    if weights_sharded() and trainer_kwargs.get("ref_model") is not None:
        raise TrainingError("sharded weights (FSDP, DeepSpeed ZeRO-3) would shard this rung's separate reference "
                            "model too, and only the trained model is gathered back for the main process to evaluate; "
                            "use strategy ddp or zero_stage 1 or 2 for it, or a reference that is the trained model's "
                            "adapter switched off (dpo with lora: true).")


@dataclass(frozen=True)
class SelectionPlan:
    """Which weights :func:`train` keeps and what it watches, resolved from the params and what is available.

    ``by``: what picks the weights kept ("metric", "loss", "last"); ``monitor``: the score watched at each
    validation evaluation ("metric", "loss", or None: nothing to watch, no callback); ``note``: why ``by`` is not
    what ``select_best`` asked (no evaluations, or no task metric because :data:`VALIDATION_SCORER` is unset, as
    when ``train`` is called outside a ladder).
    """

    by: str
    monitor: str | None
    scorer: ValidationScorer | None
    note: str | None

    @classmethod
    def resolve(cls, params: TrainParams, scorer: ValidationScorer | None, evaluates: bool) -> SelectionPlan:
        wanted, note = params.select_best, None
        if not evaluates:
            if wanted != "last":
                note = "no validation evaluations (empty validation split or evals_per_epoch 0)"
            return cls("last", None, scorer, note)
        by = wanted
        if wanted == "metric" and scorer is None:
            by, note = "last", "no task metric to score the validation split with (train called outside a ladder)"
        monitor = by if by != "last" else None
        if monitor is None and params.early_stopping_patience:
            monitor = "metric" if scorer is not None else "loss"
        return cls(by, monitor, scorer, note)

    def callback(self, model: Any, patience: int | None) -> ValidationSelection | None:
        return ValidationSelection(model, self.by, self.monitor, self.scorer, patience) if self.monitor else None

    def record(self, params: TrainParams, selection: ValidationSelection | None, final_step: int) -> dict[str, Any]:
        """The ``selection`` record :func:`train` returns (run.json and metrics.json ``training.selection``):
        ``kept_step`` is the step whose weights the model ends with."""
        found = selection is not None and selection.best_step is not None
        restored = found and self.by != "last" and selection.best_weights is not None
        metric = {"metric": self.scorer.metric if self.scorer else None, "loss": "loss"}.get(self.monitor or "")
        return {
            "by": self.by, "requested": params.select_best, "metric": metric,
            "best_step": selection.best_step if found else None, "best_value": selection.best_value if found else None,
            "kept_step": selection.best_step if restored else final_step,
            "evaluations": selection.evaluations if selection else 0,
            "stopped_early_at": selection.stopped_early_at if selection else None,
            "patience": params.early_stopping_patience, "note": self.note,
        }


#: The keys of the Trainer's log entries kept in the history (plus ``eval_<metric>`` of the task's metric).
HISTORY_KEYS = ("step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm")


def _result(trainer: Trainer, schedule: Schedule, examples: int, seconds: float,
            checkpoint: Path | None, selection: ValidationSelection | None = None,
            history_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """What :func:`train` reports: the schedule, logged losses (and validation metric, and ``history_keys``), time,
    samples and steps seen, where it resumed."""
    keep = HISTORY_KEYS + history_keys + ((selection.metric_key,) if selection is not None and selection.metric_key
                                          else ())
    history = [{k: v for k, v in entry.items() if k in keep} for entry in trainer.state.log_history]
    epochs_done = min(schedule.epochs, trainer.state.epoch or schedule.epochs)
    return {
        "schedule": schedule.to_dict(),
        "epochs": epochs_done,
        "history": [h for h in history if len(h) > 2],
        "train_seconds": seconds,
        "samples": int(round(examples * epochs_done)),
        "steps": trainer.state.global_step,
        "resumed_from": checkpoint.name if checkpoint else None,
    }
