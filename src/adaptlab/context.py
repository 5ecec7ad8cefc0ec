"""What a method needs to know about the run it is part of, with no reference to the data files.

A :class:`RunContext` is written into every run folder (`run.json`) so a saved rung can be loaded again for
prediction with the same base model, labels, sequence length and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Protocol, TypeVar

from adaptlab.models import ResolvedModel, resolve_model


class Cache(Protocol):
    """What a run shares between rungs (:meth:`RunContext.shared`): something with a cache to empty."""

    def clear(self) -> None: ...


C = TypeVar("C", bound=Cache)


@dataclass
class RunContext:
    model_spec: str
    task: str
    label_names: list[str]
    label_descriptions: dict[str, str] = field(default_factory=dict)
    max_length: int = 128
    seed: int = 0
    device: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def model(self) -> ResolvedModel:
        return resolve_model(self.model_spec, allow_pickle=self.allow_pickle)

    @cached_property
    def settings(self) -> Any:
        """The task's own typed settings (its ``Settings`` model), from the ``task:`` section of the ladder."""
        from adaptlab.tasks import get_task

        return get_task(self.task).Settings.model_validate(self.extra.get("task") or {"type": self.task})

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @cached_property
    def torch_device(self) -> str:
        import torch

        from adaptlab.distributed import is_distributed, local_rank

        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        if device == "cuda" and is_distributed():  # one process per GPU (torchrun, accelerate launch)
            return f"cuda:{local_rank()}"
        return device

    @cached_property
    def _shared(self) -> dict[Hashable, Cache]:
        return {}

    def shared(self, key: Hashable, build: Callable[[], C]) -> C:
        """The object under ``key`` shared by every rung of this run, built by ``build`` on first use (e.g. the
        embedding rungs' sentence embedder, so each text is embedded once per ladder). The context knows nothing
        of what it holds, so the methods that share something own it (and the import goes methods -> context)."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]  # type: ignore[return-value]

    def reset_caches(self) -> None:
        """Empty every shared object's cache (e.g. embeddings), so each rung pays for the work it needs (honest
        cost)."""
        for obj in self._shared.values():
            obj.clear()

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunContext:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
