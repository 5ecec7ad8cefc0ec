"""Few-shot on embeddings: k labelled examples per class, classified by nearest centroid or k nearest neighbours."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adaptlab.methods._embedding import EmbeddingMethod, softmax
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Choice, Range


class FewShotParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    shots: int = Field(8, gt=0, description="Labelled examples per class drawn (seeded) from the training split.")
    mode: Literal["centroid", "knn"] = Field("centroid", description="Nearest class centroid, or k nearest shots.")
    k: int = Field(5, gt=0, description="Neighbours for mode=knn.")
    temperature: float = Field(0.05, gt=0, description="Softmax temperature over cosine similarities.")


@METHODS.register("few_shot")
class FewShot(EmbeddingMethod):
    Params = FewShotParams
    search_space = {"shots": Choice(values=(4, 8, 16)), "temperature": Range(low=0.01, high=0.2, log=True)}

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        rng = np.random.default_rng(self.ctx.seed)
        labels = data.train.labels
        chosen, short = [], []
        for c in range(self.ctx.num_labels):
            idx = np.flatnonzero(labels == c)
            chosen += list(rng.choice(idx, size=min(self.params.shots, len(idx)), replace=False))
            if len(idx) < self.params.shots:
                short.append((self.label_names[c], len(idx)))
        if short:
            self.adjust("params.shots", self.params.shots, min(n for _, n in short),
                        "the training split has fewer examples of "
                        + ", ".join(f"'{name}' ({n})" for name, n in short) + ", so those classes use all they have")
        shots = data.train.subset(sorted(chosen))
        emb = self.embedder.encode(shots.texts, shots.pairs)
        if self.params.mode == "centroid":
            cents = np.stack([emb[shots.labels == c].mean(axis=0) for c in range(self.ctx.num_labels)])
            cents /= np.linalg.norm(cents, axis=1, keepdims=True).clip(min=1e-12)
            self.head = {"centroids": cents.astype(np.float32)}
        else:
            self.head = {"support": emb, "_support_labels": shots.labels.astype(np.int64)}
        return {"history": [], "samples": len(shots)}

    def fitted_size(self) -> int:
        return int(sum(v.size for v in self.head.values()))

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        if "centroids" in self.head:
            return softmax(embeddings @ self.head["centroids"].T / self.params.temperature)
        sims = embeddings @ self.head["support"].T
        labels = self.head["_support_labels"]
        k = min(self.params.k, sims.shape[1])
        top = np.argsort(-sims, axis=1)[:, :k]
        votes = np.full((len(embeddings), self.ctx.num_labels), -np.inf)
        for c in range(self.ctx.num_labels):
            member = labels[top] == c
            weighted = np.where(member, np.exp(np.take_along_axis(sims, top, 1) / self.params.temperature), 0.0)
            s = weighted.sum(axis=1)
            votes[:, c] = np.log(s + 1e-30)
        return softmax(votes)
