"""Shared pieces of the embedding rungs: a cached sentence embedder and a base class.

The embedder is sentence-transformers over the base model (mean pooling unless the model says otherwise). Within
one ladder every embedding rung shares it, so each text is embedded once; latency measurement turns the cache
off (:meth:`Embedder.uncached`) so it times real work. A rung that starts from a domain_mlm rung (``from:``, for
rungs that declare ``starts_from = ENCODER_PARENTS``) embeds with that rung's encoder instead (its own shared
embedder), and ships it (see ``_encoder_start``).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from adaptlab.context import RunContext
from adaptlab.methods._encoder_start import StartsFromEncoder, load_encoder
from adaptlab.methods.base import Method


class Embedder:
    """``encoder``: the encoder weights to embed with instead of the base model's (from a domain_mlm rung)."""

    def __init__(self, ctx: RunContext, batch_size: int = 64, encoder: dict[str, torch.Tensor] | None = None,
                 source: str = ""):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            ctx.model.location,
            device=ctx.torch_device,
            trust_remote_code=ctx.trust_remote_code,
            local_files_only=ctx.model.source != "hub",
        )
        self.model.max_seq_length = ctx.max_length
        if encoder is not None:
            load_encoder(self.model[0].auto_model, encoder, source)
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}
        self._use_cache = True
        self.sep = getattr(self.model.tokenizer, "sep_token", None) or "\n"

    def clear(self) -> None:
        self._cache.clear()

    @contextlib.contextmanager
    def uncached(self) -> Iterator[None]:
        old, self._use_cache = self._use_cache, False
        try:
            yield
        finally:
            self._use_cache = old

    def join(self, texts: list[str], pairs: list[str] | None) -> list[str]:
        if pairs is None:
            return list(texts)
        return [f"{a} {self.sep} {b}" for a, b in zip(texts, pairs)]

    def encode(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        texts = self.join(texts, pairs)
        if not self._use_cache:
            return self._encode(texts)
        keys = [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self._cache}.items())
        if missing:
            vectors = self._encode([t for _, t in missing])
            self._cache.update({k: v for (k, _), v in zip(missing, vectors)})
        dim = self.dimension
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, dim), dtype=np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        ).astype(np.float32)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def shared_embedder(ctx: RunContext, encoder: dict[str, torch.Tensor] | None = None,
                    source: str | None = None) -> Embedder:
    """The sentence embedder over the run's base model, shared by every embedding rung of the run (one cache); with
    ``encoder`` (weights from ``source``, a domain_mlm rung) one over that encoder, shared by the rungs that start
    from ``source``."""
    key = ("embedder", str(ctx.model.path), ctx.max_length) + ((source,) if encoder is not None else ())
    return ctx.shared(key, lambda: Embedder(ctx, encoder=encoder, source=str(source)))


class EmbeddingMethod(StartsFromEncoder, Method):
    """A rung that classifies frozen sentence embeddings with a small fitted (or fixed) head.

    Subclasses fill ``self.head`` (a dict of numpy arrays) in ``fit`` and implement ``scores``. Those that declare
    ``starts_from = ENCODER_PARENTS`` embed with a domain_mlm rung's encoder when they start from one.
    """

    head_file = "head.safetensors"

    def setup(self) -> None:
        self.embedder = shared_embedder(self.ctx, self.start_state, self.start_source)
        self.head: dict[str, np.ndarray] = {}

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        return self.scores(self.embedder.encode(texts, pairs))

    def uncached(self) -> contextlib.AbstractContextManager:
        return self.embedder.uncached()

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.head.items()}, path / self.head_file)
        self.save_start(path)

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        method = cls(params, ctx)
        method.restore_start(path)
        method.setup()
        method.head = {k: v.numpy() for k, v in load_file(path / cls.head_file).items()}
        return method

    def fitted_size(self) -> int:
        return int(sum(v.size for k, v in self.head.items() if not k.startswith("_")))

    def parameter_counts(self) -> tuple[int, int]:
        fitted = self.fitted_size() if self.trains else 0
        return fitted, self.embedder.parameter_count() + self.fitted_size()

    def trainable_state(self) -> dict[str, Any]:
        return {k: torch.from_numpy(v.copy()) for k, v in self.head.items() if self.trains and not k.startswith("_")}

    def frozen_state(self) -> dict[str, Any]:
        return self.embedder.state()


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
