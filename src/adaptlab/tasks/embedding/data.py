"""Sentence-embedding data: what every embedding rung trains on and the task scores.

Four shapes of rows (``task.format``; ``auto`` picks from the columns present):

- ``scored_pairs``: (first, second, score); scores are rescaled from ``task.score_range`` to [0, 1].
- ``labelled_pairs``: (first, second, label), entailment-style; ``label`` holds class ids into ``label_names``.
- ``triplets``: (anchor = first, positive = second, negative).
- ``retrieval``: (query = first, its relevant document = second). Each split's corpus is every document of that
  split (plus an optional extra corpus file); ``relevant[i]`` lists the corpus ids relevant to query ``i``.

The shared interface (fixed: the task, the rungs and serving build on it):

- An embedding rung implements ``encode(texts: list[str]) -> np.ndarray``: L2-normalised float32 rows.
- ``EmbeddingSplit.texts`` is every distinct text of a split's rows (what unsupervised rungs such as TSDAE and the
  ``domain_mlm`` stage learn from; not the extra corpus, which the test split searches too); ``pairs`` is None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

FORMATS = ("scored_pairs", "labelled_pairs", "triplets", "retrieval")
Format = Literal["scored_pairs", "labelled_pairs", "triplets", "retrieval"]


@dataclass
class EmbeddingSplit:
    """One split. ``ids`` point back to the source rows. Fields a format doesn't have are None."""

    ids: list[str]
    first: list[str]  # sentence 1 / anchor / query
    second: list[str]  # sentence 2 / positive / relevant document text
    negative: list[str] | None = None  # triplets
    score: list[float] | None = None  # scored pairs, in [0, 1]
    label: list[int] | None = None  # labelled pairs: index into EmbeddingData.label_names
    corpus_ids: list[str] = field(default_factory=list)  # retrieval: the documents searched
    corpus: list[str] = field(default_factory=list)
    relevant: list[list[str]] | None = None  # retrieval: corpus ids relevant to each query

    def __len__(self) -> int:
        return len(self.first)

    @property
    def texts(self) -> list[str]:
        """Every distinct text of the split's rows, in first-seen order: never the extra corpus (it is searched by
        every split, test included) nor the documents of rows a subset left out."""
        seen: dict[str, None] = {}
        for column in (self.first, self.second, self.negative or []):
            for t in column:
                seen.setdefault(t, None)
        return list(seen)

    @property
    def pairs(self) -> None:
        """No second text goes with each of :attr:`texts` (a classification split's text pairs)."""
        return None

    def subset(self, index: np.ndarray | list[int]) -> EmbeddingSplit:
        """The rows ``index`` (the corpus stays whole: a retrieval subset searches the same documents)."""
        idx = list(index)

        def pick(values: list | None) -> list | None:
            return None if values is None else [values[i] for i in idx]

        return EmbeddingSplit(ids=pick(self.ids), first=pick(self.first), second=pick(self.second),
                              negative=pick(self.negative), score=pick(self.score), label=pick(self.label),
                              corpus_ids=list(self.corpus_ids), corpus=list(self.corpus),
                              relevant=pick(self.relevant))


@dataclass
class EmbeddingData:
    format: Format
    train: EmbeddingSplit
    validation: EmbeddingSplit
    test: EmbeddingSplit
    label_names: list[str] = field(default_factory=list)  # labelled pairs only

    def meta(self) -> dict[str, Any]:
        return {"format": self.format, "label_names": list(self.label_names)}
