"""The base model's sentence embeddings, untrained: the floor every trained embedding rung must beat."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.context import RunContext
from adaptlab.methods._embedding import shared_embedder
from adaptlab.methods._encoder_start import ENCODER_PARENTS, StartsFromEncoder
from adaptlab.methods.base import METHODS, Method

#: What ``weights/`` holds for this rung: which base it is (nothing else ships).
BASE_FILE = "base.json"


@METHODS.register("embedding_base")
class EmbeddingBase(StartsFromEncoder, Method):
    tasks = frozenset({"embedding"})
    trains = False
    starts_from = ENCODER_PARENTS  # from: domain_mlm embeds with the pre-trained encoder, untrained otherwise

    def setup(self) -> None:  # one cache per ladder (per domain_mlm parent), emptied before each rung
        self.embedder = shared_embedder(self.ctx, self.start_state, self.start_source)

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        return self.embedder.encode(list(texts))

    def sentence_model(self) -> Any:
        """The SentenceTransformer it encodes with (what an export converts): the base, or its domain_mlm encoder."""
        return self.embedder.model

    def uncached(self) -> contextlib.AbstractContextManager:
        return self.embedder.uncached()

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        about = {"model": self.ctx.model_spec, "sha256": self.ctx.model.sha256, "max_length": self.ctx.max_length}
        (path / BASE_FILE).write_text(json.dumps(about, indent=2), encoding="utf-8")
        self.save_start(path)

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        method = cls(params, ctx)
        method.restore_start(path)
        method.setup()
        return method

    def parameter_counts(self) -> tuple[int, int]:
        return 0, self.embedder.parameter_count()

    def frozen_state(self) -> dict[str, Any]:
        return self.embedder.state()
