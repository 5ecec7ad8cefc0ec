"""What a method returns for token classification, and tags -> entities with character offsets."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptlab.tasks.token_classification.schemes import spans


@dataclass
class TagOutput:
    """BIO tags per word for each sentence, with what could not be predicted honestly.

    ``words_cut``: words past the model's max_length in each sentence (tagged O); ``unparsed``: a generative rung's
    answer that could not be read (all O). Both are counted in the metrics, never hidden.
    """

    tags: list[list[str]]
    words_cut: list[int] = field(default_factory=list)
    unparsed: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.words_cut = self.words_cut or [0] * len(self.tags)
        self.unparsed = self.unparsed or [False] * len(self.tags)


def entities_of(tags: list[str], text: str, offsets: list[tuple[int, int]]) -> list[dict]:
    """Entities of a BIO sequence as {start, end, label, text} character spans of ``text``."""
    found = []
    for first, end, kind in spans(tags):
        start, stop = offsets[first][0], offsets[end - 1][1]
        found.append({"start": start, "end": stop, "label": kind, "text": text[start:stop]})
    return found
