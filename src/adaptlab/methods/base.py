"""The method lifecycle every rung implements, and the registry rungs add themselves to."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.registry import Registry
from adaptlab.search_space import Dim

log = logging.getLogger(__name__)


class NoParams(BaseModel):
    """This method has no hyperparameters."""

    model_config = ConfigDict(extra="forbid")


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


class TorchModelAccounting:
    """Accounting for rungs that hold a torch ``self.model`` whose ``requires_grad`` flags say what trains."""

    model: Any

    def parameter_counts(self) -> tuple[int, int]:
        params = list(self.model.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def trainable_state(self) -> dict[str, Any]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def frozen_state(self) -> dict[str, Any]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if not p.requires_grad}


METHODS: Registry[type[Method]] = Registry("method")
