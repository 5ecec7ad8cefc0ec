"""The engine interface the HTTP layer talks to: one base model, named adapters, batched classify, NER, embeddings and
generate.

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
#: Temperatures under this decode greedily.
GREEDY_BELOW = 1e-5
#: What a model of each export kind (a task's ``export_kind``) is served on.
ROUTES = {"classifier": "/v1/classify", "decoder": "/v1/completions or /v1/chat/completions", "tagger": "/v1/ner",
          "embedder": "/v1/embeddings"}


def task_kind(task: str | None) -> str | None:
    """The export kind a task declares (``classifier``, ``decoder``, ``tagger``): what serves its runs, so that a
    new task of an existing kind needs no serving change. None for a task this install doesn't know, or one that
    ships nothing."""
    from adaptlab.errors import UserError
    from adaptlab.tasks import get_task

    if not task:
        return None
    try:
        return get_task(task).export_kind
    except UserError:
        return None


def default_task(kind: str) -> str:
    """The first registered task of export kind ``kind``: what a model that says only its kind (the bare base, a
    bare peft folder) is called."""
    from adaptlab.tasks import TASKS

    return next((name for name in TASKS.names() if task_kind(name) == kind), kind)


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
    task: str  # the adaptlab task: "classification", "generation", "token_classification", ...
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
    #: What the model is served as, its task's export kind (classifier, decoder, tagger; see :data:`ROUTES`).
    #: Derived from ``task`` when not given.
    export_kind: str | None = None

    def __post_init__(self) -> None:
        if self.export_kind is None:
            self.export_kind = task_kind(self.task)

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
class Embedding:
    """One text's sentence embedding and how many tokens of it were read (after truncation)."""

    vector: list[float]
    tokens: int


@dataclass
class GenerationParams:
    """Decoding settings of one prompt (already capped by the server's limits).

    The fields the ladder's :class:`~adaptlab.config.GenerationSpec` has too carry the same meaning, so the shared
    next-token rule (:func:`adaptlab.generation.decoding.logits_processors` and ``pick``) takes either. As in
    OpenAI's API, temperature 0 means greedy: it is :attr:`do_sample` that the rule reads. So does a temperature
    under :data:`GREEDY_BELOW` (as vLLM takes it), which would scale the logits past float range.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_k: int | None = None
    repetition_penalty: float = 1.0

    @property
    def do_sample(self) -> bool:
        return self.temperature >= GREEDY_BELOW


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

    def ner(self, adapter: str, texts: list[str]) -> list[list[dict[str, Any]]]:
        """Per text, the entities ``adapter`` finds: ``{"start", "end", "label", "text", "score"}`` with character
        offsets into that text."""

    def embed(self, adapter: str, texts: list[str]) -> list[Embedding]:
        """Per text, its L2-normalised sentence embedding through ``adapter`` (``"base"``: the bare encoder, pooled
        as the base model's sentence-transformers config says) and the number of tokens read."""

    def generate(self, adapter: str, prompts: list[Any],
                 params: list[GenerationParams]) -> Iterator[list[GenerationChunk]]:
        """Stream the completions of ``prompts`` (texts, or what :meth:`chat_prompt` returned; one params per
        prompt): per step, the chunks that have news."""

    def chat_prompt(self, adapter: str, messages: list[dict[str, str]]) -> Any:
        """The prompt of a chat conversation, as this engine's ``generate`` takes it in place of a prompt text (the
        transformers engine: the messages, formatted at generation time as the adapter's rung formatted them)."""
