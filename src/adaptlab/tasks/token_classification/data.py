"""Frames -> token-classification data: words, BIO tags and where each word sits in the text.

Two shapes of rows are read (the columns are task settings):

- ``tokens`` + ``tags``: a list of words and one tag per word (CoNLL files read this way, and JSONL rows such as
  ``{"tokens": ["Paris", "is"], "tags": ["B-LOC", "O"]}``). The text is the words joined by single spaces.
- ``text`` + ``spans``: the raw text and its entities as character spans ``[{"start", "end", "label"}]``. The text
  is cut into words as BERT's pre-tokeniser does (runs of letters/digits, and each other non-space character
  alone); a span becomes the words it covers.

Every problem names the file and the row (or CoNLL line) and says how to fix it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from adaptlab.errors import DataError
from adaptlab.tasks.token_classification.schemes import (
    bio_labels,
    detect_scheme,
    entity_types,
    tag_problem,
    tag_share,
    tags_from_spans,
    to_bio,
)

WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass
class TokenSplit:
    """One split: ``ids`` point back to the source rows; ``offsets`` are each word's (start, end) in ``texts``."""

    ids: list[str]
    tokens: list[list[str]]
    tags: list[list[str]]
    texts: list[str]
    offsets: list[list[tuple[int, int]]]

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, index: np.ndarray | list[int]) -> TokenSplit:
        idx = list(index)
        return TokenSplit(*([values[i] for i in idx] for values in
                            (self.ids, self.tokens, self.tags, self.texts, self.offsets)))


@dataclass
class TokenData:
    label_names: list[str]  # O, then B-/I- per entity type
    entity_types: list[str]
    scheme: str
    train: TokenSplit
    validation: TokenSplit
    test: TokenSplit
    repairs: dict[str, int] = field(default_factory=dict)  # per split: I- tags that opened an entity

    def meta(self) -> dict[str, Any]:
        return {"label_names": self.label_names, "entity_types": self.entity_types, "scheme": self.scheme,
                "tag_repairs": self.repairs}


def words_of(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    found = list(WORD.finditer(text))
    return [m.group() for m in found], [(m.start(), m.end()) for m in found]


def joined(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The words joined by spaces, with each word's character offsets."""
    offsets, at = [], 0
    for word in tokens:
        offsets.append((at, at + len(word)))
        at += len(word) + 1
    return " ".join(tokens), offsets


def where(frame: pd.DataFrame, i: int) -> str:
    """How a row is named in messages: the CoNLL line of the sentence, else the data row."""
    row = frame.iloc[i]
    if "_line" in frame.columns:
        return f"the sentence at line {int(row['_line'])}"
    return f"row {int(row['_row'])}" if "_row" in frame.columns else f"row {i + 1}"


def _as_list(value: Any, what: str, source: str, place: str) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise DataError(f"{source}: {place}: {what} is text, not a list; write it as a JSON list such as "
                            '["Paris", "is", "nice"].') from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list):
        raise DataError(f"{source}: {place}: {what} must be a list, got {type(value).__name__}.")
    return value


def read_tagged(frame: pd.DataFrame, tokens_col: str, tags_col: str, source: str) -> list[tuple]:
    """(tokens, raw tags, text, offsets) per row of a tokens + tags frame."""
    rows = []
    for i, (tokens, tags) in enumerate(zip(frame[tokens_col], frame[tags_col])):
        place = where(frame, i)
        tokens = _as_list(tokens, f"'{tokens_col}'", source, place)
        tags = _as_list(tags, f"'{tags_col}'", source, place)
        if not tokens:
            raise DataError(f"{source}: {place} is an empty sentence (no tokens); remove it.")
        if len(tokens) != len(tags):
            raise DataError(f"{source}: {place} has {len(tokens)} tokens but {len(tags)} tags; give every token "
                            "exactly one tag (O outside entities).")
        bad = [k for k, w in enumerate(tokens)
               if not isinstance(w, str) or not w.strip() or any(c.isspace() for c in w)]
        if bad:
            raise DataError(f"{source}: {place}: token {bad[0] + 1} ({tokens[bad[0]]!r}) is empty, not text or holds "
                            "a space; every token must be one non-empty word.")
        bad = [k for k, t in enumerate(tags) if not isinstance(t, str) or not t.strip()]
        if bad:
            ids = ("; the tags are numbers, as a hub dataset's label ids (ner_tags) are: save the data with "
                   "the tag names (a datasets folder saved with save_to_disk keeps them), or write the names"
                   if any(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in tags) else "")
            raise DataError(f"{source}: {place}: tag {bad[0] + 1} ({tags[bad[0]]!r}) is empty or not text{ids}; use "
                            "O for a token outside every entity.")
        odd = [(k, problem) for k, t in enumerate(tags) if (problem := tag_problem(t.strip()))]
        if odd:
            k, problem = odd[0]
            raise DataError(f"{source}: {place}: tag {k + 1} ({tags[k]!r}) {problem}.")
        text, offsets = joined(tokens)
        rows.append((tokens, [t.strip() for t in tags], text, offsets))
    return rows


def read_spans(frame: pd.DataFrame, text_col: str, spans_col: str, source: str) -> list[tuple]:
    """(words, BIO tags, text, offsets) per row of a text + character spans frame."""
    rows = []
    for i, (text, entities) in enumerate(zip(frame[text_col], frame[spans_col])):
        place = where(frame, i)
        if not isinstance(text, str):
            raise DataError(f"{source}: {place}: '{text_col}' must be text, got {type(text).__name__}.")
        words, offsets = words_of(text)
        if not words:
            raise DataError(f"{source}: {place}: the text {text[:40]!r} has no words to tag; remove the row.")
        entities = _as_list(entities, f"'{spans_col}'", source, place)
        rows.append((words, tags_from_spans(len(words), _word_spans(entities, text, offsets, source, place)),
                     text, offsets))
    return rows


def _word_spans(entities: list, text: str, offsets: list[tuple[int, int]], source: str, place: str) -> list[tuple]:
    """Character spans -> (first word, end word, type), checked: in the text, non-empty, not overlapping."""
    found, last_end = [], -1
    checked = [_checked_span(k, e, len(text), source, place) for k, e in enumerate(entities)]
    for k, (start, end, label) in sorted(enumerate(checked), key=lambda x: x[1][:2]):
        if start < last_end:
            raise DataError(f"{source}: {place}: span {k} ({start}-{end}, {label!r}) overlaps the span before it; "
                            "token classification tags each word once, so keep one of the overlapping spans.")
        last_end = end
        covered = [w for w, (a, b) in enumerate(offsets) if a < end and b > start]
        if not covered:
            raise DataError(f"{source}: {place}: span {k} ({start}-{end}, {label!r}) covers no word, only "
                            "spaces; fix its offsets.")
        found.append((covered[0], covered[-1] + 1, label))
    return found


def _checked_span(k: int, span: Any, length: int, source: str, place: str) -> tuple[int, int, str]:
    fix = 'each span is {"start": <int>, "end": <int, exclusive>, "label": "<type>"} inside the text'
    if not isinstance(span, dict) or not {"start", "end", "label"} <= set(span):
        raise DataError(f"{source}: {place}: span {k} is {span!r}; {fix}.")
    start, end, label = span["start"], span["end"], span["label"]
    whole = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in (start, end))
    if not (whole and isinstance(label, str) and label.strip()):
        raise DataError(f"{source}: {place}: span {k} is {span!r}; {fix}.")
    start, end = int(start), int(end)
    if not 0 <= start < end <= length:
        raise DataError(f"{source}: {place}: span {k} ({start}-{end}, {label!r}) runs past the text (length "
                        f"{length}) or is empty; {fix}.")
    return start, end, label.strip()


def build_data(rows: dict[str, list[tuple]], ids: dict[str, list[str]], scheme: str,
               source: str = "the training data") -> TokenData:
    """Normalise every split to BIO (counting repairs) and fix the label set from the training split (read from
    ``source``, which the errors name)."""
    used = scheme if scheme != "auto" else detect_scheme(r[1] for r in rows["train"])
    splits, repairs = {}, {}
    for name, split_rows in rows.items():
        converted = [to_bio(r[1], used) for r in split_rows]
        repairs[name] = sum(c.repairs for c in converted)
        splits[name] = TokenSplit(ids[name], [r[0] for r in split_rows], [c.tags for c in converted],
                                  [r[2] for r in split_rows], [r[3] for r in split_rows])
    types = entity_types(splits["train"].tags)
    if tag_share(w for r in rows["train"] for w in r[0]) > 0.5:
        raise DataError(f"{source}: most training tokens are written as tags (O, B-..., I-...), and the tags read as "
                        f"{len(types)} entity types (e.g. {', '.join(types[:5])}): the tokens and tags columns look "
                        "swapped. Point task.tokens_column at the words and task.tags_column at the tags.")
    if not types:
        raise DataError(f"{source}: the training split has no entities (every tag is O): nothing to learn; check "
                        "the tags column or the spans.")
    return TokenData(bio_labels(types), types, used, splits["train"], splits["validation"], splits["test"], repairs)


def unseen_types(data: TokenData) -> list[tuple[str, str, list[str]]]:
    """(split, entity type, ids of its sentences) for types in validation/test that training never has."""
    known, found = set(data.entity_types), {}
    for name, split in (("validation", data.validation), ("test", data.test)):
        for sid, tags in zip(split.ids, split.tags):
            for kind in entity_types([tags]):
                if kind not in known:
                    found.setdefault((name, kind), []).append(sid)
    return [(name, kind, ids) for (name, kind), ids in found.items()]
