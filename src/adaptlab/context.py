"""What a method needs to know about the run it is part of, with no reference to the data files.

A :class:`RunContext` is written into every run folder (`run.json`) so a saved rung can be loaded again for
prediction with the same base model, labels, sequence length and seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from adaptlab.models import ResolvedModel, resolve_model


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

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @cached_property
    def torch_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    @cached_property
    def _embedders(self) -> dict:
        return {}

    def embedder(self):
        """A sentence embedder over the base model, shared by every embedding rung of this run (one cache)."""
        from adaptlab.methods._embedding import Embedder

        key = (str(self.model.path), self.max_length)
        if key not in self._embedders:
            self._embedders[key] = Embedder(self)
        return self._embedders[key]

    def reset_caches(self) -> None:
        """Forget cached embeddings, so each rung pays for the embedding work it needs (honest cost)."""
        for embedder in self._embedders.values():
            embedder.clear()

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunContext:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
