"""Few-shot prompting: k solved training examples in the prompt before the input, nothing trained.

Examples are chosen at random (seeded; for classification the labels take turns, so every label is shown) or, per
input, by embedding similarity (cosine of sentence embeddings, ``embedding_model``, default MiniLM). They are added
one by one while the prompt still fits the budget (``max_prompt_tokens``, default ``data.max_length`` minus the
longest answer), so long inputs get fewer. With a chat template, examples are earlier user/assistant turns. The
prompt size actually used (mean tokens and shots) is reported in ``metrics.prompt``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.generation.formatting import Demo, Input
from adaptlab.methods._causal import ChoiceParams, GenerativeMethod, split_examples
from adaptlab.methods.base import METHODS, Method
from adaptlab.search_space import Choice
from adaptlab.specs import ModelName

DEMOS_FILE = "demos.json"
EMBEDDINGS_FILE = "demo_embeddings.safetensors"


class FewShotPromptParams(ChoiceParams):
    shots: int = Field(4, gt=0, le=64, description="In-context examples (k) per prompt, at most.")
    selection: Literal["random", "similar"] = Field(
        "random", description="random: the same k for every input; similar: the k nearest training examples."
    )
    max_prompt_tokens: int | None = Field(
        None, gt=0, description="Token budget of the prompt with its examples (at most, and by default, "
        "data.max_length minus the longest answer)."
    )
    embedding_model: ModelName = Field("minilm", description="Sentence embedder for selection=similar.")


def _as_text(x: Input) -> str:
    if isinstance(x, str):
        return x
    users = [m.get("content", "") for m in x if m.get("role") == "user"]
    return users[-1] if users else " ".join(m.get("content", "") for m in x)


@METHODS.register("few_shot_prompt")
class FewShotPrompt(GenerativeMethod):
    """k solved examples in the prompt (random or most similar), fitted to the token budget."""

    Params = FewShotPromptParams
    search_space = {"shots": Choice(values=(1, 2, 4, 8)), "selection": Choice(values=("random", "similar"))}

    @classmethod
    def check(cls, params: Any, ctx: RunContext, data: Any) -> list[str]:
        problems = super().check(params, ctx, data)
        if params.selection == "similar":
            from adaptlab.models import resolve_model

            try:
                resolve_model(params.embedding_model)
            except UserError as e:
                problems.append(f"params.embedding_model: {e}")
        if len(data.train) == 0:
            problems.append("few-shot prompting needs training examples to show; the training split is empty.")
        return problems

    def __init__(self, params: Any, ctx: RunContext):
        super().__init__(params, ctx)
        self.pool: list[Demo] = []
        self.embeddings: np.ndarray | None = None
        self._embedder: Any = None

    # -- choosing examples ---------------------------------------------------------------------------------------
    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        examples = split_examples(data.train, self.words)
        pool = [Demo(x, answer, pair) for x, pair, answer in examples]
        if len(pool) < self.params.shots:
            self.adjust("params.shots", self.params.shots, len(pool),
                        f"the training split has only {len(pool)} examples to show")
        if self.params.selection == "random":
            self.pool = [pool[i] for i in self._random_order(data.train)[: self.params.shots]]
        else:
            self.pool = pool
            self.embeddings = self._embed([_as_text(d.input) for d in pool])
        return {"history": [], "samples": len(self.pool)}

    def _random_order(self, split: Any) -> list[int]:
        rng = np.random.default_rng(self.ctx.seed)
        order = list(rng.permutation(len(split.ids)))
        if hasattr(split, "references"):
            return order
        by_label: dict[int, list[int]] = {}
        for i in order:
            by_label.setdefault(int(split.labels[i]), []).append(i)
        queues = list(by_label.values())  # labels in order of first appearance
        turns = [q[j] for j in range(max(len(q) for q in queues)) for q in queues if j < len(q)]
        return turns

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            from sentence_transformers import SentenceTransformer

            from adaptlab.models import resolve_model

            resolved = resolve_model(self.params.embedding_model)
            self._embedder = SentenceTransformer(resolved.location, device=self.ctx.torch_device,
                                                 local_files_only=resolved.is_local)
        return self._embedder.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False).astype(np.float32)

    def demos_for(self, inputs: Sequence[Input], pairs: Sequence[str | None] | None) -> list[list[Demo]]:
        plist = list(pairs) if pairs is not None else [None] * len(inputs)
        if self.params.selection == "random" or self.embeddings is None:
            ranked = [self.pool] * len(inputs)
        else:
            sims = self._embed([_as_text(x) for x in inputs]) @ self.embeddings.T
            ranked = [[self.pool[j] for j in np.argsort(-row, kind="stable")[: self.params.shots]] for row in sims]
        return [self._fit_budget(x, p, demos) for x, p, demos in zip(inputs, plist, ranked)]

    def _fit_budget(self, x: Input, pair: str | None, demos: list[Demo]) -> list[Demo]:
        """The longest prefix of ``demos`` whose prompt fits the budget (no examples if even one doesn't)."""
        longest = max((len(self.formatter.answer_ids("", None, w)) for w in self.words), default=0)
        budget = min(self.params.max_prompt_tokens or self.ctx.max_length, self.ctx.max_length - longest)
        chosen: list[Demo] = []
        for demo in demos:
            if len(self.formatter.prompt_ids(x, pair, [*chosen, demo])) > budget:
                break
            chosen.append(demo)
        return chosen

    # -- shipping ------------------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        super().save(path)
        demos = [{"input": d.input, "pair": d.pair, "answer": d.answer} for d in self.pool]
        (path / DEMOS_FILE).write_text(json.dumps(demos, ensure_ascii=False, indent=1), encoding="utf-8")
        if self.embeddings is not None:
            save_file({"embeddings": torch.from_numpy(self.embeddings)}, path / EMBEDDINGS_FILE)

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        method = cls(params, ctx)
        method.setup()
        demos = json.loads((path / DEMOS_FILE).read_text(encoding="utf-8"))
        method.pool = [Demo(d["input"], d["answer"], d.get("pair")) for d in demos]
        if (path / EMBEDDINGS_FILE).is_file():
            method.embeddings = load_file(path / EMBEDDINGS_FILE)["embeddings"].numpy()
        return method

    def parameter_counts(self) -> tuple[int, int]:
        trainable, total = super().parameter_counts()
        if self._embedder is not None:
            total += sum(p.numel() for p in self._embedder.parameters())
        return trainable, total
