"""Embedding zero-shot: pick the label whose description is closest (cosine) to the text. Nothing is trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adaptlab.methods._embedding import EmbeddingMethod, softmax
from adaptlab.methods.base import METHODS


class ZeroShotParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    temperature: float = Field(0.05, gt=0, description="Softmax temperature over cosine similarities (scores only).")
    template: str = Field("{description}", description="Text embedded per label; `{description}` is replaced.")


@METHODS.register("embedding_zero_shot")
class EmbeddingZeroShot(EmbeddingMethod):
    Params = ZeroShotParams
    trains = False

    def setup(self) -> None:
        super().setup()
        if "{description}" not in self.params.template:
            from adaptlab.errors import UserError

            raise UserError("embedding_zero_shot.params.template must contain '{description}'.")
        descriptions = [
            self.params.template.format(description=self.ctx.label_descriptions.get(n, n)) for n in self.label_names
        ]
        with self.embedder.uncached():
            self.head = {"label_embeddings": self.embedder.encode(descriptions)}

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        return {"history": [], "samples": 0}

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        return softmax(embeddings @ self.head["label_embeddings"].T / self.params.temperature)
