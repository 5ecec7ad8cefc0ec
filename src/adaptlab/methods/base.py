"""The method lifecycle every rung implements, and the registry rungs add themselves to."""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.registry import Registry
from adaptlab.search_space import Dim

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Footprint:
    """What a set-up rung holds and processes, for the memory planner (:mod:`adaptlab.planning`)."""

    #: bytes its loaded weights occupy (a 4-bit matrix as stored: half a byte per value plus its scales)
    weight_bytes: int
    #: examples per gradient step's micro-batch (0: nothing trains by gradient descent)
    train_batch: int = 0
    #: share of the model's layers the backward pass goes through (0: only a head after the body trains)
    backprop_layers: float = 0.0
    #: examples per scoring (inference) batch
    eval_batch: int = 64
    #: tokens the longest batch pads to
    tokens: int = 512
    #: whether a forward pass makes vocabulary-sized logits at every position (language models)
    vocab_logits: bool = False


#: A layer index in a parameter's name (BERT ``layer.3.``, Llama ``layers.3.``, GPT-2 ``h.3.``, T5 ``block.3.``).
_LAYER = re.compile(r"\.(?:layers?|h|block)\.(\d+)\.")
#: Parameters after the body (a task head), which a backward pass reaches without going through the layers.
_HEAD = re.compile(r"(^|\.)(classifier|score|pooler|head|lm_head|qa_outputs)(\.|$)")


def backprop_share(trainable: list[str], layers: int) -> float:
    """Share of ``layers`` the backward pass goes through when the parameters named ``trainable`` train: from the
    lowest layer that has one; all of them when something before the layers trains (embeddings, a soft prompt);
    none when only a head does."""
    indices = [int(m.group(1)) for n in trainable if (m := _LAYER.search(n))]
    if any(not _LAYER.search(n) and not _HEAD.search(n) for n in trainable):
        return 1.0
    if not indices or layers <= 0:
        return 0.0
    return min(1.0, (layers - min(indices)) / layers)


class NoParams(BaseModel):
    """This method has no hyperparameters."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Method:
    """Base of every rung.

    Lifecycle: ``m = Method(params, ctx); m.setup(); m.fit(data, workdir); m.predict_proba(texts, pairs);
    m.save(dir)``; later ``Method.load(dir, params, ctx)`` gives a method that predicts identically.

    Cost accounting reads ``parameter_counts()``; the contract test reads ``trainable_state()`` (what fitting may
    change) and ``frozen_state()`` (what it must not change).
    """

    name: ClassVar[str] = "method"  # set by METHODS.register
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    Params: ClassVar[type[BaseModel]] = NoParams
    #: False for rungs that fit nothing (zero-shot); the contract test then expects no trainable state.
    trains: ClassVar[bool] = True
    #: False for rungs that predict nothing of the task: a pre-training stage (domain_mlm) that other rungs start
    #: from (``from:``). The pipeline fits, measures and saves them like any rung but predicts nothing: their result
    #: has no value of the primary metric, only their own metrics (:meth:`own_metrics`), and ``"predicts": false``.
    predicts: ClassVar[bool] = True
    #: True for rungs whose fit trains through :func:`adaptlab.training.train` (the Trainer): launched on several
    #: processes, every process fits them together (DDP, DeepSpeed); the other rungs run on the main process alone.
    data_parallel: ClassVar[bool] = False
    #: The ``runtime:`` options this rung's training honours (see :mod:`adaptlab.runtime`); the others are reported
    #: as not applied when asked for. Empty: nothing it does is affected (prompting rungs, SetFit's own loop).
    runtime_options: ClassVar[frozenset[str]] = frozenset()
    #: Methods whose finished rungs this one can start from (a rung's ``from:``, see :meth:`start_from`); empty:
    #: it always starts from the base model. Config validation checks a rung's ``from`` against it.
    starts_from: ClassVar[frozenset[str]] = frozenset()
    #: What a tuning search (a ladder's ``tuning:``) varies by default: fields of :attr:`Params`, each a
    #: :class:`~adaptlab.search_space.Range` or :class:`~adaptlab.search_space.Choice`. Empty: never tuned
    #: (nothing worth searching, e.g. zero-shot prompting).
    search_space: ClassVar[dict[str, Dim]] = {}

    def __init__(self, params: BaseModel, ctx: RunContext):
        self.params = params
        self.ctx = ctx
        #: settings used in place of the configured ones (see :meth:`adjust`); the pipeline writes them to run.json
        self.adjustments: dict[str, dict[str, Any]] = {}

    # -- optional hooks, with their defaults -------------------------------------------------------------------
    @classmethod
    def check(cls, params: BaseModel, ctx: RunContext, data: Any) -> list[str]:
        """Pre-flight, before any rung starts: problems that would make this rung fail on this model and data."""
        return []

    @classmethod
    def input_digest(cls, params: BaseModel, ctx: RunContext) -> str | None:
        """A digest of what the rung reads beyond its params and the ladder's data (e.g. the content of a file a
        param names): part of the rung's resume hash, so a changed file re-runs it. None: it reads nothing else."""
        return None

    def extra_metrics(self) -> dict[str, Any]:
        """Metrics beyond the task's, measured by the method itself after fitting (e.g. forgetting)."""
        return {}

    def language_model(self) -> Any:
        """The rung's language model as adapted, for benchmarks (``task.judges.mmlu``): an
        :class:`adaptlab.judging.LanguageModel`, or None when the rung has none (classifiers, reward models)."""
        return None

    def own_metrics(self, split: Any) -> dict[str, Any]:
        """A rung that predicts nothing (:attr:`predicts` False): its own measurements on the test ``split``'s inputs
        after fitting (e.g. masked-LM perplexity before and after), recorded as its metrics."""
        return {}

    def uncached(self) -> contextlib.AbstractContextManager:
        """A context in which predictions recompute everything (no embedding cache), for honest latency."""
        return contextlib.nullcontext()

    @property
    def label_names(self) -> list[str]:
        return self.ctx.label_names

    def adjust(self, setting: str, requested: Any, used: Any, reason: str) -> Any:
        """Use ``used`` in place of the configured ``requested`` value of ``setting`` (e.g. ``data.max_length``):
        warns once per setting and records it in :attr:`adjustments`, which the pipeline writes into run.json.
        Returns ``used``. Never clamp a setting silently; call this instead."""
        adjustments = self.adjustments
        if adjustments.get(setting, {}).get("used") != used:
            log.warning("%s: %s is %s but %s is used: %s.", self.name, setting,
                        requested, used, reason)
        adjustments[setting] = {"requested": requested, "used": used, "reason": reason}
        return used

    def start_from(self, run_dir: Path, info: dict[str, Any]) -> None:
        """Start from a finished rung's output instead of the base model (a rung's ``from:``).

        The pipeline calls it after building the method and before :meth:`setup`, with the parent's published
        folder ``run_dir`` (``<output>/<parent>``, its ``weights/`` inside) and its ``run.json`` ``info``, once it
        has checked that the parent finished ``ok`` with the settings the ladder has now. Methods that support it
        list the parent methods they accept in :attr:`starts_from`; the rest keep this default."""
        raise UserError(f"{self.name} can't start from another rung's output (it always starts from the base "
                        "model); drop the rung's `from`.")

    def accepted_parent(self, run_dir: Path, info: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        """(folder, run.json) of the rung ``start_from`` was given, once its method is one of :attr:`starts_from`
        (UserError naming the methods this rung accepts otherwise)."""
        method = info["rung"]["method"]
        if method not in self.starts_from:
            raise UserError(f"{self.name} can start from a rung of {', '.join(sorted(self.starts_from))}, not from "
                            f"'{method}' ({run_dir}).")
        return Path(run_dir), info

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load the base model and prepare it for this method."""

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        """Fit on ``data.train`` (``data.validation`` may be empty); ``resume`` continues from the last checkpoint
        in ``workdir`` where the method keeps any. Returns {"history": [...], "samples": n, ...}."""
        return {"history": [], "samples": 0}

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        """Class probabilities, shape (len(texts), num_labels)."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """Write what must be shipped (safetensors only) into ``path``."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, params: BaseModel, ctx: RunContext) -> Method:
        raise NotImplementedError

    # -- accounting --------------------------------------------------------------------------------------------
    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, total including the frozen base."""
        raise NotImplementedError

    def trainable_state(self) -> dict[str, Any]:
        return {}

    def frozen_state(self) -> dict[str, Any]:
        return {}

    def computes_in_half(self) -> bool:
        """Whether its matrix products may run in bf16/fp16 whatever the runtime's precision (a model loaded in bf16,
        a 4-bit base computing in bf16): on a CPU such a rung keeps oneDNN, the fast path there
        (:func:`adaptlab.runtime.cpu_kernels`)."""
        return False

    def merges_as(self) -> str | None:
        """What its model is once any adapter is merged into it, as an export kind (``classifier``, ``tagger``,
        ``decoder``: :attr:`Task.export_kind`); None when there is no transformers model to merge into (embedding
        rungs, spaCy). ``adaptlab export --merge/--onnx`` ships it only where the task's bundle expects that kind."""
        return None

    #: Whether its forward pass makes vocabulary-sized logits at every position (language models).
    makes_vocab_logits: ClassVar[bool] = False
    #: A registered method that trains the same way over a 4-bit base (``adaptlab plan``'s advice when memory is
    #: short); None when there is none.
    four_bit_variant: ClassVar[str | None] = None
    #: False for rungs whose adapter was trained over a base held differently from the shared one (qlora: 4-bit):
    #: the server refuses to put it on the shared full-precision base, where it would be another model.
    shared_base: ClassVar[bool] = True

    def footprint(self, data: Any, layers: int) -> Footprint:
        """What the set-up rung holds and processes (for ``adaptlab plan``); ``layers``: the base's layer count.
        Default: fp32 weights, nothing trained by gradient descent, batches of data.max_length tokens."""
        return Footprint(weight_bytes=4 * self.parameter_counts()[1], eval_batch=self.scoring_batch(),
                         tokens=self.longest_tokens(data))

    def scoring_batch(self) -> int:
        """Examples per inference batch when it scores or predicts."""
        from adaptlab.training import TrainParams

        return self.params.eval_batch_size if isinstance(self.params, TrainParams) else 64

    def longest_tokens(self, data: Any) -> int:
        """Tokens the longest batch pads to (default: data.max_length, the most any example may have)."""
        return self.ctx.max_length


class TorchModelAccounting:
    """Accounting for rungs that hold a torch ``self.model`` whose ``requires_grad`` flags say what trains."""

    model: Any

    def parameter_counts(self) -> tuple[int, int]:
        from adaptlab.methods._peft import unpacked_numel

        params = list(self.model.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(unpacked_numel(p) for p in params)

    def trainable_state(self) -> dict[str, Any]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def frozen_state(self) -> dict[str, Any]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if not p.requires_grad}

    def footprint(self, data: Any, layers: int) -> Footprint:
        """The weights as loaded; batches from the rung's training settings (:class:`TrainParams` fields)."""
        from adaptlab.training import TrainParams

        tensors = [*self.model.parameters(), *self.model.buffers()]
        trainable = [n for n, p in self.model.named_parameters() if p.requires_grad]
        params = self.params  # type: ignore[attr-defined]
        trains = isinstance(params, TrainParams) and bool(trainable)
        return Footprint(
            weight_bytes=sum(t.numel() * t.element_size() for t in tensors),
            train_batch=params.batch_size if trains else 0,
            backprop_layers=backprop_share(trainable, layers) if trains else 0.0,
            eval_batch=self.scoring_batch(),  # type: ignore[attr-defined]
            tokens=self.longest_tokens(data),  # type: ignore[attr-defined]
            vocab_logits=self.makes_vocab_logits)  # type: ignore[attr-defined]


METHODS: Registry[type[Method]] = Registry("method")
