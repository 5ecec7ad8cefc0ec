"""Linear probe: the base stays frozen; logistic regression on its pooled sentence embeddings (scikit-learn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adaptlab.methods._embedding import EmbeddingMethod, softmax
from adaptlab.methods.base import METHODS


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    C: float = Field(1.0, gt=0, description="Inverse L2 regularisation strength (scikit-learn LogisticRegression).")
    max_iter: int = Field(2000, gt=0, description="Solver iterations.")
    class_weight: Literal["balanced", "none"] | None = Field(
        "balanced", description="balanced: weight classes by n / (classes x count), so rare classes count as much as "
        "common ones; none (or null): unweighted.",
    )


@METHODS.register("linear_probe")
class LinearProbe(EmbeddingMethod):
    Params = ProbeParams

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x = self.embedder.encode(data.train.texts, data.train.pairs)
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(
            C=self.params.C, max_iter=self.params.max_iter,
            class_weight="balanced" if self.params.class_weight == "balanced" else None,
            random_state=self.ctx.seed,
        )
        clf.fit(scaler.transform(x), data.train.labels)
        coef, intercept = clf.coef_, clf.intercept_
        if self.ctx.num_labels == 2:  # sklearn keeps one row for binary problems: expand to one row per class
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        missing = sorted(set(range(self.ctx.num_labels)) - set(clf.classes_.tolist()))
        if missing:  # a class absent from training can never be predicted
            full_w = np.zeros((self.ctx.num_labels, x.shape[1]))
            full_b = np.full(self.ctx.num_labels, -1e9)
            full_w[clf.classes_], full_b[clf.classes_] = coef, intercept
            coef, intercept = full_w, full_b
        self.head = {
            "weight": coef.astype(np.float32),
            "bias": intercept.astype(np.float32),
            "_mean": scaler.mean_.astype(np.float32),
            "_scale": scaler.scale_.astype(np.float32),
        }
        return {"history": [], "samples": len(x)}

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        z = (embeddings - self.head["_mean"]) / self.head["_scale"]
        return softmax(z @ self.head["weight"].T + self.head["bias"])
