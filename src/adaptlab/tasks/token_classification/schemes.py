"""Tag schemes: IO, BIO (IOB2) and BIOES (also BILOU's L-/U-) read into one internal scheme, BIO.

A tag is ``O`` or ``<prefix>-<type>``; a bare type (``PER``) is read as ``I-PER``, as IO files write it. Converting
to BIO repairs what the source scheme forbids, and counts it: in BIO and BIOES an ``I-`` (or ``E-``) tag whose
entity was not opened just before (after ``O`` or another type) starts a new entity, as conlleval reads it. In IO
every change of type starts an entity, which is the scheme's meaning, not a repair.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

SCHEMES = ("auto", "IO", "BIO", "BIOES")
_PREFIXES = {"B": "B", "I": "I", "E": "E", "S": "S", "L": "E", "U": "S"}


def split_tag(tag: str) -> tuple[str, str | None]:
    """("O", None) or (prefix, type) with the prefix in B/I/E/S (BILOU's L and U read as E and S)."""
    if tag == "O":
        return "O", None
    head, sep, rest = tag.partition("-")
    if sep and head.upper() in _PREFIXES and rest:
        return _PREFIXES[head.upper()], rest
    rest, sep, tail = tag.rpartition("-")  # type-first spellings such as PER-B
    if sep and tail.upper() in _PREFIXES and rest:
        return _PREFIXES[tail.upper()], rest
    return "I", tag


_TAG_SHAPE = re.compile(r"O|[BIESLU]-\S+")


def tag_share(words: Iterable[str]) -> float:
    """The share of ``words`` written as tags (O, B-PER, I-LOC, ...): near 1 when a tokens column holds tags."""
    words = list(words)
    return sum(1 for w in words if _TAG_SHAPE.fullmatch(w)) / max(1, len(words))


def tag_problem(tag: str) -> str | None:
    """What is wrong with a tag that any scheme would misread (as an entity type of its own), or None."""
    if tag in ("o", "0"):
        return "is not a tag: the outside tag is the capital letter O"
    if tag.startswith("-") or tag.endswith("-"):
        return "has no entity type (write B-PER, I-PER, ... or O)"
    if re.fullmatch(r"[BIESLU][_.:/]\S+", tag):
        return f"separates its prefix with '{tag[1]}'; write it with a hyphen ({tag[0]}-{tag[2:]})"
    return None


def detect_scheme(sequences: Iterable[list[str]]) -> str:
    """BIOES if any tag is S-/U-, or E-/L- beside B-; BIO if any is B-; else IO, where a tag is its type, whatever
    letters start it (``E-MAIL`` is the type E-MAIL: an E- that no B- ever opened ends nothing)."""
    prefixes = {split_tag(t)[0] for seq in sequences for t in seq}
    if "S" in prefixes or {"B", "E"} <= prefixes:
        return "BIOES"
    return "BIO" if "B" in prefixes else "IO"



@dataclass
class Converted:
    tags: list[str]
    repairs: int  # I-/E- tags that opened an entity the scheme says must be opened by B-


def to_bio(tags: list[str], scheme: str) -> Converted:
    """``tags`` (in ``scheme``: IO, BIO or BIOES) as BIO tags, with the number of repairs made."""
    out: list[str] = []
    repairs = 0
    prev: tuple[str, str | None] = ("O", None)
    for tag in tags:
        prefix, kind = split_tag(tag)
        if scheme == "IO" and prefix in ("E", "S"):  # no BIOES end in an IO file: part of the type (E-MAIL)
            prefix, kind = "I", tag
        if prefix == "O":
            out.append("O")
        elif prefix in ("B", "S"):
            out.append(f"B-{kind}")
        else:  # I or E: continues the open entity of the same type, else opens one
            continues = prev[1] == kind and prev[0] in ("B", "I")
            if not continues and scheme != "IO":
                repairs += 1
            out.append(f"I-{kind}" if continues else f"B-{kind}")
        prev = (prefix, kind) if prefix not in ("E", "S") else ("O", None)
        if prefix in ("I",) and scheme == "IO":
            prev = ("I", kind)
    return Converted(out, repairs)


def entity_types(sequences: Iterable[list[str]]) -> list[str]:
    return sorted({kind for seq in sequences for t in seq for p, kind in [split_tag(t)] if kind})


def bio_labels(types: list[str]) -> list[str]:
    """The model's label set for these entity types: O, then B-/I- per type."""
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """Entities of a BIO tag sequence as (first word, end word exclusive, type); an I- after O opens one."""
    found: list[tuple[int, int, str]] = []
    start, kind = None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, t = split_tag(tag)
        if start is not None and (prefix in ("O", "B", "S") or t != kind):
            found.append((start, i, kind))
            start, kind = None, None
        if prefix != "O" and start is None:
            start, kind = i, t
    return found


def tags_from_spans(n: int, entities: Iterable[tuple[int, int, str]]) -> list[str]:
    tags = ["O"] * n
    for start, end, kind in entities:
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end):
            tags[i] = f"I-{kind}"
    return tags
