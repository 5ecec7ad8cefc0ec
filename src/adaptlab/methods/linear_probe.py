"""Linear probe: the base stays frozen; logistic regression (scikit-learn) on its frozen representations.

What a representation is comes from the task's encoder objective (``probe_unit``): for classification, each text's
pooled sentence embedding (the shared embedder, so every embedding rung embeds a text once); for token
classification, each word's final hidden state (its first sub-token), from the same shared model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adaptlab.context import RunContext
from adaptlab.methods._embedding import EmbeddingMethod, softmax
from adaptlab.methods._encoder_start import ENCODER_PARENTS
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Range


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    C: float = Field(1.0, gt=0, description="Inverse L2 regularisation strength (scikit-learn LogisticRegression).")
    max_iter: int = Field(2000, gt=0, description="Solver iterations.")
    class_weight: Literal["balanced", "none"] | None = Field(
        None, description="balanced: weight classes by n / (classes x count), so rare classes count as much as "
        "common ones; none: unweighted. Default (null): the task's choice, balanced for classification, none for "
        "token classification (where O dominates).",
    )
    batch_size: int = Field(64, gt=0, description="Sentences per forward pass when reading word states.")


@METHODS.register("linear_probe")
class LinearProbe(EmbeddingMethod):
    Params = ProbeParams
    search_space = {"C": Range(low=0.01, high=100.0, log=True)}
    tasks = frozenset({"classification", "token_classification"})
    starts_from = ENCODER_PARENTS  # from: domain_mlm embeds with its pre-trained encoder

    def __init__(self, params: Any, ctx: RunContext):
        super().__init__(params, ctx)
        from adaptlab.tasks import get_task

        self.objective = get_task(ctx.task).encoder_objective(ctx.label_names, ctx.settings)

    def features(self, split: Any) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) for fitting: one row per text, or per word for token classification."""
        if self.objective.probe_unit == "word":
            states, seen = self._word_states(split.tokens)
            return np.concatenate(states), self.objective.probe_targets(split, seen)
        return self.embedder.encode(split.texts, split.pairs), np.asarray(split.labels)

    def _word_states(self, sentences: list[list[str]]) -> tuple[list[np.ndarray], list[Any]]:
        body = self.embedder.model[0].auto_model  # the shared sentence-transformers model's transformer
        return self.objective.word_features(body, self.embedder.model.tokenizer, sentences, self.params.batch_size,
                                            self.ctx.max_length, self.ctx.torch_device)

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x, y = self.features(data.train)
        scaler = StandardScaler().fit(x)
        weighted = (self.params.class_weight or self.objective.default_class_weight) == "balanced"
        clf = LogisticRegression(C=self.params.C, max_iter=self.params.max_iter,
                                 class_weight="balanced" if weighted else None, random_state=self.ctx.seed)
        clf.fit(scaler.transform(x), y)
        self.head = {**_full_rows(clf, self.ctx.num_labels, x.shape[1]),
                     "_mean": scaler.mean_.astype(np.float32), "_scale": scaler.scale_.astype(np.float32)}
        return {"history": [], "samples": len(x), "class_weights": "balanced" if weighted else None}

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        z = (embeddings - self.head["_mean"]) / self.head["_scale"]
        return softmax(z @ self.head["weight"].T + self.head["bias"])

    def predict_tags(self, sentences: list[list[str]]) -> Any:
        """Token classification: each word's tag from its frozen state."""
        states, seen = self._word_states(sentences)
        return self.objective.probe_output([self.scores(s) if len(s) else np.zeros((0, 1)) for s in states], seen)


def _full_rows(clf: Any, num_labels: int, dim: int) -> dict[str, np.ndarray]:
    """The fitted weights with one row per label: binary problems expanded, absent classes never predicted."""
    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2 and coef.shape[0] == 1:  # sklearn keeps one row for binary problems
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    if len(clf.classes_) < num_labels:  # a class absent from training can never be predicted
        full_w, full_b = np.zeros((num_labels, dim)), np.full(num_labels, -1e9)
        full_w[clf.classes_], full_b[clf.classes_] = coef, intercept
        coef, intercept = full_w, full_b
    return {"weight": coef.astype(np.float32), "bias": intercept.astype(np.float32)}
