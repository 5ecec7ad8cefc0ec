"""Free-text prompting: the base model writes an answer and the label is parsed from it (unparseable = wrong).

Shown next to constrained choice so the difference is visible: a model that "knows" the answer may still phrase it
in a way no parser maps to a label. Parsing: the answer (casefolded, punctuation stripped) equal to a label word,
else the only label word that occurs in it as a whole word; otherwise it is unparseable, the example counts as
wrong, and the share of such answers is reported as ``parse_failure_rate``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from adaptlab.methods._causal import GenerativeMethod, PromptParams
from adaptlab.methods.base import METHODS

EXAMPLES_KEPT = 5


class FreeTextParams(PromptParams):
    max_new_tokens: int = Field(8, gt=0, le=512, description="Tokens the model may write before parsing.")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def parse_label(answer: str, words: Sequence[str]) -> int | None:
    """Index of the label word ``answer`` names, or None when it names none or several."""
    said = _norm(answer)
    normed = [_norm(w) for w in words]
    if said in normed:
        return normed.index(said)
    found = [i for i, w in enumerate(normed) if w and re.search(rf"(?<!\w){re.escape(w)}(?!\w)", said)]
    return found[0] if len(found) == 1 else None


@METHODS.register("free_text_prompt")
class FreeTextPrompt(GenerativeMethod):
    """The base model generates; the label is parsed from its text."""

    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    Params = FreeTextParams

    def __init__(self, params: Any, ctx: Any):
        super().__init__(params, ctx)
        self._answers: dict[tuple, tuple[str, int | None]] = {}

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        """One-hot rows for parsed answers; a row of NaN (no answer) where the text names no single label."""
        settings = self.spec.generation.model_copy(update={"max_new_tokens": self.params.max_new_tokens})
        answers = self.generate(texts, pairs, settings)
        out = np.full((len(texts), len(self.words)), np.nan, dtype=np.float32)
        for i, answer in enumerate(answers):
            label = parse_label(answer, self.words)
            self._answers[(texts[i], pairs[i] if pairs else None)] = (answer, label)
            if label is not None:
                out[i] = 0.0
                out[i, label] = 1.0
        return out

    def extra_metrics(self) -> dict[str, Any]:
        out = super().extra_metrics()
        if self._answers:
            failed = [a for a, label in self._answers.values() if label is None]
            out["parse_failure_rate"] = round(len(failed) / len(self._answers), 4)
            out["parse_failures"] = failed[:EXAMPLES_KEPT]
        return out
