"""Preference data: for each pair, a prompt (a text, or chat messages before the reply) and two responses, the
chosen one (preferred) and the rejected one.

The shared interface (the task, the preference rungs and the SFT rungs build on it):

- A preference rung implements ``score_pairs(prompts, chosen, rejected) -> (scores_chosen, scores_rejected)``: one
  float per pair and response, higher meaning "more preferred" (a log-probability, an implicit reward, a reward
  model's scalar). The task compares them; nothing else about the rung is assumed.
- ``PreferenceSplit.inputs`` / ``.references`` are the prompts and the chosen responses: the supervised view the
  generative fine-tuning rungs (lm_lora, lm_full, ...) train on (prompt -> chosen), as for the generation task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Format = Literal["text", "chat"]


@dataclass
class PreferenceSplit:
    """One split. ``ids`` point back to the source rows (``_row``)."""

    ids: list[str]
    prompts: list[Any]  # a text, or a list of {role, content} messages
    chosen: list[str]
    rejected: list[str]
    source: str = ""  # the file the pairs come from (frame.attrs["source"]), for messages naming a row

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def inputs(self) -> list[Any]:
        """The prompts: what a supervised (SFT) rung reads, as the generation task's inputs."""
        return self.prompts

    @property
    def references(self) -> list[str]:
        """The chosen responses: what a supervised (SFT) rung learns to write."""
        return self.chosen

    def prompt_texts(self) -> list[str]:
        """The prompts as text (chat messages as JSON)."""
        return [p if isinstance(p, str) else json.dumps(p, ensure_ascii=False) for p in self.prompts]

    def subset(self, index: np.ndarray | list[int]) -> PreferenceSplit:
        idx = list(index)
        return PreferenceSplit([self.ids[i] for i in idx], [self.prompts[i] for i in idx],
                               [self.chosen[i] for i in idx], [self.rejected[i] for i in idx], self.source)


def empty_split() -> PreferenceSplit:
    return PreferenceSplit([], [], [], [])


@dataclass
class PreferenceData:
    format: Format
    columns: dict[str, str | None]
    train: PreferenceSplit
    validation: PreferenceSplit
    test: PreferenceSplit
    dropped_for_groups: int = 0

    def meta(self) -> dict[str, Any]:
        return {"label_names": [], "label_descriptions": {}, "format": self.format, "columns": self.columns,
                "dropped_for_groups": self.dropped_for_groups}
