"""How a rung trains on this machine: precision, fused kernels, padding-free batches, compilation, checkpointing,
optimiser (the ``runtime:`` section of a ladder and of each rung).

Every option is ``auto`` by default. On a CUDA device ``auto`` is the fast path: bf16 mixed precision (fp16 where the
GPU lacks bf16), Liger's fused kernels for causal LMs when ``liger-kernel`` is installed, padding-free batches for
causal-LM fine-tuning (examples laid end to end with their own position ids; SDPA keeps them apart) and
torch.compile (the fused AdamW, transformers' default, everywhere). On a CPU ``auto`` keeps the plain settings
(fp32, no compilation, no packing), whose results the README's tables were measured with. An option asked for
explicitly is applied wherever it can be; where it can't (fp16 or Liger or the 8-bit optimiser on a CPU, packing
for an encoder, anything on a rung that doesn't train) the rung runs without it and says so: :attr:`Runtime.notes`
go to the console and to the run's ``metrics.json``.

A rung declares the options its training honours (``Method.runtime_options``); the pipeline resolves the ladder's
and the rung's requests against them and the device (:func:`resolve`), and :data:`RUNTIME` carries the result to
:func:`adaptlab.training.train` and the method while the rung trains.
"""

from __future__ import annotations

import contextvars
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Options a rung trained by a transformers Trainer honours whatever the model.
TRAINER_OPTIONS = frozenset({"precision", "compile", "gradient_checkpointing", "optimizer"})
#: Options a causal-LM fine-tuning rung honours besides: Liger's fused kernels and padding-free batches.
CAUSAL_SFT_OPTIONS = TRAINER_OPTIONS | {"liger", "packing"}

OPTIMIZERS = {"adamw": "adamw_torch", "adamw_fused": "adamw_torch_fused", "adamw_8bit": "adamw_bnb_8bit"}


class RuntimeSpec(BaseModel):
    """``runtime:``: how trained rungs train here (a ladder default; a rung's own section overrides field by field)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision of training: auto (bf16 on a GPU that has it, else fp16; fp32 on CPU), "
        "fp32, bf16 (also on CPU, through autocast), fp16 (CUDA only).")
    liger: bool | Literal["auto"] = Field(
        "auto", description="Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) for "
        "causal LMs: auto (on CUDA when liger-kernel is installed: pip install 'adaptlab[gpu]'). CUDA only.")
    packing: bool | Literal["auto"] = Field(
        "auto", description="Padding-free batches for causal-LM fine-tuning: a batch's examples laid end to end "
        "with their own position ids, no padding computed. auto: on CUDA; true applies on CPU too.")
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model for training: auto (on CUDA). On CPU, true compiles too (the "
        "compilation takes minutes and rarely pays off on short runs).")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="Recompute activations in the backward pass instead of keeping them (less memory, about "
        "a third more compute): auto (off; `adaptlab plan` says when a rung needs it).")
    optimizer: Literal["auto", "adamw", "adamw_fused", "adamw_8bit"] = Field(
        "auto", description="auto (adamw_fused, transformers' default), adamw_fused (one kernel for all parameters; "
        "CPU and CUDA), adamw (torch's multi-tensor AdamW), adamw_8bit (bitsandbytes' 8-bit states; CUDA only).")

    def over(self, base: RuntimeSpec) -> RuntimeSpec:
        """This (a rung's) section over ``base`` (the ladder's): the fields set here win."""
        return base.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


#: Settings a rung's training checkpoint continues under whatever their value: recomputing activations in the
#: backward pass changes memory and time, not the numbers (turn it on after running out of memory, then --resume).
CHECKPOINT_NEUTRAL = ("gradient_checkpointing",)


@dataclass(frozen=True)
class Runtime:
    """What a rung's training actually uses (resolved); ``notes`` say what was asked for and not applied, and why."""

    device: str = "cpu"
    precision: str = "fp32"
    liger: bool = False
    packing: bool = False
    compile: bool = False
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_fused"  # transformers' default
    notes: tuple[str, ...] = field(default=())

    def changed(self, checkpoint: bool = False) -> dict[str, Any]:
        """The settings that differ from plain training (fp32, nothing fused or compiled), for the rung's hash (a
        rung on plain settings hashes as before the runtime section existed). ``checkpoint``: only those a training
        checkpoint can't be continued under another value of (all but :data:`CHECKPOINT_NEUTRAL`)."""
        skip = ("device", "notes", *(CHECKPOINT_NEUTRAL if checkpoint else ()))
        return {k: v for k, v in asdict(self).items() if k not in skip and v != getattr(PLAIN, k)}

    def record(self) -> dict[str, Any]:
        """For metrics.json: what was used and what was not applied."""
        return {**{k: v for k, v in asdict(self).items() if k != "notes"}, "not_applied": list(self.notes)}

    def trainer_args(self) -> dict[str, Any]:
        """transformers ``TrainingArguments`` fields for these settings."""
        return {
            "bf16": self.precision == "bf16", "fp16": self.precision == "fp16",
            "use_liger_kernel": self.liger, "torch_compile": self.compile,
            **checkpointing_args(self.gradient_checkpointing),
            "optim": OPTIMIZERS[self.optimizer],
        }


@contextmanager
def cpu_kernels(runtime: Runtime, half: bool = False) -> Iterator[None]:
    """torch's own kernels in place of oneDNN's while a rung runs in fp32 on a CPU; at bf16 (the runtime's, or
    ``half``: the rung's model computes in bf16/fp16, ``Method.computes_in_half``) oneDNN is on, its matrix products
    being a CPU's fast path there. The setting is process-wide (``torch.backends.mkldnn.enabled``), set for the block
    whatever it was and restored after it.

    oneDNN compiles a kernel for each input shape it is given (torch gives it the exact GELU of BERT-like encoders)
    and keeps every one, about 6 MB, in a cache of 1,024 that is never emptied. Batches padded to their longest
    example meet a new shape at each length, so a run's memory grew with the lengths it met and stayed grown for the
    rungs after it: GELU alone over 57 shapes added 341 MB; a server meeting every length up to 512 would hold
    gigabytes. torch's own kernels don't keep a kernel per shape. Measured (``bench/cpu_kernels.py``; README,
    "Runtime, QLoRA and the planner"): the Rotten Tomatoes LoRA rung peaked at 1089 MB instead of 1377 in the same
    training time; a MiniLM forward pass took 2-6% longer. The two GELUs differ by up to about 5e-7, so a loaded
    rung predicts with the kernels it ran with (:func:`kernels_for`)."""
    import torch

    with kernels_kept():
        torch.backends.mkldnn.enabled = not (runtime.device == "cpu" and runtime.precision == "fp32" and not half)
        yield


@contextmanager
def kernels_kept() -> Iterator[None]:
    """The process's kernels as they were before the block (a rung that loads another run keeps its own)."""
    import torch

    before = torch.backends.mkldnn.enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def kernels_for(device: str, half: bool) -> None:
    """This process's kernels for a model loaded to predict (a finished rung, a bundle, the server's base), as
    :func:`cpu_kernels` ran it: on a CPU, oneDNN off in fp32 and on in half precision, so that a loaded rung gives the
    scores it recorded, to the last digit. Other devices: left as they are."""
    import torch

    if device == "cpu":
        torch.backends.mkldnn.enabled = half


@contextmanager
def kernels_of(device: str, half: bool) -> Iterator[None]:
    """For a block, the kernels of another model a rung calls (an LLM judge): as :func:`kernels_for` sets them for
    it, whatever the rung runs with; the rung's own are restored after."""
    with kernels_kept():
        kernels_for(device, half)
        yield


def kernels_now() -> bool:
    """Whether oneDNN is on now (read right after loading a model: the kernels :func:`kernels_for` chose for it)."""
    import torch

    return bool(torch.backends.mkldnn.enabled)


@contextmanager
def kernels_as(onednn: bool) -> Iterator[None]:
    """For a block, oneDNN on or off (a loaded scorer's own, from :func:`kernels_now`); restored after."""
    import torch

    with kernels_kept():
        torch.backends.mkldnn.enabled = onednn
        yield


def checkpointing_args(on: bool) -> dict[str, Any]:
    """Activation checkpointing's TrainingArguments fields, under their current names (``gradient_checkpointing``
    before transformers renamed it ``activation_checkpointing``)."""
    from transformers import TrainingArguments

    name = "activation" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient"
    return {f"{name}_checkpointing": on, f"{name}_checkpointing_kwargs": {"use_reentrant": False} if on else None}


#: Plain training: fp32, nothing fused, packed or compiled (what a rung uses outside a ladder, e.g. in tests).
PLAIN = Runtime()
#: The resolved runtime of the rung now training (set by the pipeline around a rung's set-up and fit).
RUNTIME: contextvars.ContextVar[Runtime] = contextvars.ContextVar("adaptlab_runtime", default=PLAIN)


@dataclass(frozen=True)
class Machine:
    """What the options depend on: the device, and (on CUDA) bf16 support; whether liger-kernel is installed."""

    device: str
    bf16: bool = False
    liger_installed: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @classmethod
    def of(cls, device: str) -> Machine:
        import torch

        # planning for a GPU from a machine without one (adaptlab plan --device cuda) assumes bf16 (Ampere or newer)
        bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else device.startswith("cuda")
        return cls(device, bf16=bool(bf16), liger_installed=importlib.util.find_spec("liger_kernel") is not None)


def resolve(requested: RuntimeSpec, machine: Machine, supported: frozenset[str], causal: bool,
            rung: str) -> Runtime:
    """The settings a rung trains with: ``requested`` (auto or explicit) against the machine, the options the rung
    honours (``supported``) and whether its model is a causal LM."""
    notes: list[str] = []

    def allowed(option: str, why_not: str | None) -> bool:
        """Whether an option may apply; an explicit request that can't is noted, auto just stays off."""
        value = getattr(requested, option)
        reason = why_not if option in supported else f"rung '{rung}' does not train with it"
        if reason and value != "auto" and value != getattr(PLAIN, option):
            notes.append(f"{option}={str(value).lower()} not applied: {reason}")
        return reason is None

    def wanted(option: str, auto: bool) -> bool:
        value = getattr(requested, option)
        return auto if value == "auto" else bool(value)

    cuda = machine.cuda
    precision = requested.precision
    if precision == "auto":
        precision = ("bf16" if machine.bf16 else "fp16") if cuda else "fp32"
    if not allowed("precision", None if cuda or precision != "fp16" else f"fp16 needs CUDA (device {machine.device})"):
        precision = "fp32"
    liger_why = (f"Liger's kernels need CUDA (device {machine.device})" if not cuda else
                 "Liger's kernels are for causal LMs" if not causal else
                 None if machine.liger_installed else "liger-kernel is not installed (pip install 'adaptlab[gpu]')")
    liger = allowed("liger", liger_why) and wanted("liger", cuda)
    packing = allowed("packing", None if causal else "padding-free batches are for causal LMs") \
        and wanted("packing", cuda)
    compile_ = allowed("compile", None) and wanted("compile", cuda)
    checkpointing = allowed("gradient_checkpointing", None) and wanted("gradient_checkpointing", False)
    optimizer = requested.optimizer if requested.optimizer != "auto" else "adamw_fused"
    eight_bit_why = f"bitsandbytes' 8-bit optimiser needs CUDA (device {machine.device})"
    if not allowed("optimizer", eight_bit_why if optimizer == "adamw_8bit" and not cuda else None):
        optimizer = PLAIN.optimizer
    return Runtime(machine.device, precision, liger, packing, compile_, checkpointing, optimizer, tuple(notes))
