"""The engine interface the HTTP layer talks to: one base model, named adapters, batched classify and generate.

An engine owns the model and is driven from one worker thread (:mod:`adaptlab.serving.batching`), so it needs no
locking of its own. Every batch it receives is for one adapter (``"base"`` is the bare base model); that is the
shape vLLM's multi-LoRA engine takes too (a ``LoRARequest`` per request), so another engine can plug in by
implementing this Protocol. The one shipped here is :class:`~adaptlab.serving.transformers_engine.TransformersEngine`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

BASE = "base"


class EngineError(Exception):
    """A request the engine can't serve (wrong task for the model, missing labels, ...). HTTP status included."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class AdapterInfo:
    """What ``GET /v1/models`` says about a model: task, labels, where it came from."""

    name: str
    task: str  # "classification" | "generation"
    kind: str  # "base" | "peft" | "head"
    method: str | None = None
    labels: list[str] = field(default_factory=list)
    label_descriptions: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    base_sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    #: Classifiers: trained on text pairs (True: ``text_pair`` required), on single texts (False: refused), or
    #: unknown (None: either is taken).
    text_pair: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClassifyItem:
    """One text (and optional pair) to classify; ``labels`` (name -> description) for zero-shot on the base."""

    text: str
    pair: str | None = None
    labels: dict[str, str] | None = None


@dataclass
class Classification:
    label: str
    scores: dict[str, float]


@dataclass
class GenerationParams:
    """Sampling settings of one prompt (already capped by the server's limits)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class GenerationChunk:
    """New text for prompt ``index`` of a batch; ``finish_reason`` ("stop" | "length") on its last chunk."""

    index: int
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine(Protocol):
    """What a serving engine does. All calls come from one thread, one batch at a time."""

    base_name: str

    def adapters(self) -> list[AdapterInfo]:
        """The base model (named ``"base"``) and every loaded adapter."""

    def load_adapter(self, spec: Any) -> AdapterInfo:
        """Load an adapter (an :class:`~adaptlab.serving.adapters.AdapterSpec`) under ``spec.name``."""

    def unload_adapter(self, name: str) -> None:
        """Forget an adapter and free its weights."""

    def classify(self, adapter: str, batch: list[ClassifyItem]) -> list[Classification]:
        """One classification per item, all with ``adapter``."""

    def generate(self, adapter: str, prompts: list[str],
                 params: list[GenerationParams]) -> Iterator[list[GenerationChunk]]:
        """Stream the completions of ``prompts`` (one params per prompt): per step, the chunks that have news."""

    def chat_prompt(self, adapter: str, messages: list[dict[str, str]]) -> str:
        """The prompt text for a chat conversation (the tokenizer's chat template, with the assistant turn open)."""
