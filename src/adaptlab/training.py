"""Gradient training for every rung that trains weights, on top of the transformers Trainer.

The Trainer brings what users expect and we should not rewrite: accelerate (DDP, FSDP, DeepSpeed through
``accelerate launch``), TensorBoard logs, optimizer/scheduler/RNG checkpoints and exact resume. adaptlab adds:
checkpoints written atomically (temporary folder, fsync, rename), checkpoints every N minutes, and a guard that
stops a rung whose loss stops being finite with the step, learning rate and a suggestion. Any Trainer subclass
(trl, sentence-transformers) gets the same: :func:`train` takes the class and its arguments class.
"""

from __future__ import annotations

import contextvars
import functools
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from adaptlab.errors import TrainingError

CHECKPOINTS = "checkpoints"
#: ``group_by_length: null`` groups batches by length from this many training examples on.
GROUP_BY_LENGTH_FROM = 4000
#: ``epochs: null`` trains for at least this many optimizer steps unless the task or the rung says otherwise.
DEFAULT_MIN_STEPS = 150


class TrainParams(BaseModel):
    """Hyperparameters shared by every rung that trains weights with gradient descent."""

    model_config = ConfigDict(extra="forbid")
    epochs: float | None = Field(
        None, gt=0, description="Passes over the training split. Default (null): as many whole passes as it takes to "
        "reach min_steps optimizer steps (at least 1, at most max_auto_epochs), so small data still trains enough.",
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
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Mixed precision on GPU (bf16 on Ampere or newer); CPU training stays fp32."
    )

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


class TimedCheckpoints(TrainerCallback):
    """Ask for a checkpoint whenever `minutes` of training have passed since the last one."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.last >= self.seconds:
            control.should_save = True
            self.last = time.monotonic()
        return control


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
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return EpochSeededLengthGroupedSampler(lengths, batch, self.args.data_seed or self.args.seed)
        return inherited(train_dataset)

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        run_dir = Path(self._get_output_dir(trial=trial))
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        tmp = run_dir / f"tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        real_output_dir = self.args.output_dir
        # Let the base classes write into a scratch run dir, then move the finished checkpoint into place.
        scratch = run_dir / ".scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        self.args.output_dir = str(scratch)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = real_output_dir
        written = scratch / final.name
        _fault_point(f"checkpoint:{self.state.global_step}")
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
    written. Used by the crash/resume tests; inert unless that variable is set."""
    if os.environ.get("ADAPTLAB_FAULT") == name:
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
        bf16=params.precision == "bf16" and not use_cpu,
        fp16=params.precision == "fp16" and not use_cpu,
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
) -> dict[str, Any]:
    """Train ``model`` in place with ``trainer_cls``; returns {"history", "train_seconds", "samples", "steps", ...}.

    Any transformers Trainer subclass works (trl's ``SFTTrainer``/``DPOTrainer``, sentence-transformers'
    ``SentenceTransformerTrainer``): it is subclassed with :class:`AtomicCheckpoints`, and gets the loss guard,
    timed checkpoints and progress callbacks. ``trainer_kwargs`` go to its constructor (``processing_class``,
    ``ref_model``, ``loss``, ``peft_config``, ...). ``args_cls`` is its arguments class (default: the class's
    ``training_args_class`` if it names one, as sentence-transformers' do, else ``TrainingArguments``), with
    ``args_kwargs`` for that class's own fields. ``collator`` None leaves the class's default collator.
    ``loss_func`` replaces the model's own loss (the Trainer's ``compute_loss_func``), e.g. class-weighted.
    """
    schedule = Schedule.resolve(params, _num_examples(train_dataset))
    eval_steps = None
    if eval_dataset is not None and len(eval_dataset) and params.evals_per_epoch:
        eval_steps = max(1, schedule.steps_per_epoch // params.evals_per_epoch)
    args_cls = args_cls or getattr(trainer_cls, "training_args_class", TrainingArguments)
    args = training_arguments(params, schedule, workdir, eval_steps, seed, use_cpu, args_cls, **(args_kwargs or {}))
    trainer = _build_trainer(
        trainer_cls, workdir, loss_func, model=model, args=args, train_dataset=train_dataset,
        eval_dataset=eval_dataset if eval_steps else None, data_collator=collator, callbacks=_callbacks(params),
        **(trainer_kwargs or {}),
    )
    checkpoint = last_checkpoint(workdir) if resume else None
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - start
    final_loss = output.training_loss
    if not math.isfinite(final_loss):
        raise TrainingError(f"the mean training loss is {final_loss}; lower the learning_rate.")
    return _result(trainer, schedule, _num_examples(train_dataset), seconds, checkpoint)


def _result(trainer: Trainer, schedule: Schedule, examples: int, seconds: float,
            checkpoint: Path | None) -> dict[str, Any]:
    """What :func:`train` reports: the schedule, logged losses, time, samples and steps seen, where it resumed."""
    history = [
        {k: v for k, v in entry.items() if k in ("step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm")}
        for entry in trainer.state.log_history
    ]
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
