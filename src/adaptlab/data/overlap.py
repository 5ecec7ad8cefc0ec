"""Held-out examples whose input also occurs in the training split.

A test example that was also a training example inflates every trained rung's score (and not the prompting rungs'),
so the comparison is skewed before anything runs. Real datasets repeat themselves (reposted reviews, boilerplate
sentences, the same prompt asked twice), and files split by hand often share rows. The ladder counts such
examples once, after the split (:func:`split_overlap`), records them in leaderboard.json (``overlap``) and warns;
the report repeats the warning. Inputs are compared after Unicode NFKC normalisation, case folding and whitespace
collapsing; what an example's input is, is the task's to say (``Task.inputs``).
"""

from __future__ import annotations

import unicodedata
from typing import Any

#: How many of the shared examples' ids are recorded (and shown) at most.
SHOWN_IDS = 20
#: Between the parts of one input (a text pair, chat turns): not whitespace, so normalising keeps the boundary.
SEPARATOR = "\u241e"


def joined(*parts: str) -> str:
    """One input made of several texts (a pair), their boundary kept."""
    return SEPARATOR.join(parts)


def chat_text(value: Any) -> str:
    """A prompt as compared: a text as it is; chat messages as "role: content" turns (their spacing then
    normalised like any text's, not escaped as in JSON)."""
    if isinstance(value, str):
        return value
    return joined(*(f"{m.get('role')}: {m.get('content')}" if isinstance(m, dict) else str(m) for m in value))


def normalise(text: str) -> str:
    """``text`` as the check compares it: NFKC, case-folded, runs of whitespace as one space, trimmed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def overlap(train: list[str], held_out: list[str], ids: list[str]) -> dict[str, Any]:
    """How many of ``held_out`` (with their ``ids``) occur in ``train``: {"examples", "in_train", "share", "ids"}."""
    seen = {normalise(t) for t in train}
    hits = [i for i, text in enumerate(held_out) if normalise(text) in seen]
    return {"examples": len(held_out), "in_train": len(hits),
            "share": len(hits) / len(held_out) if held_out else 0.0, "ids": [ids[i] for i in hits[:SHOWN_IDS]]}


def split_overlap(task: Any, data: Any) -> dict[str, dict[str, Any]]:
    """The overlap of the validation and test splits (those with examples) with the training split."""
    train = task.inputs(data.train)
    return {name: overlap(train, task.inputs(split), list(split.ids))
            for name, split in (("validation", data.validation), ("test", data.test)) if len(split)}


def overlap_warning(found: dict[str, dict[str, Any]]) -> str | None:
    """What to tell the user when test examples occur in the training split (None when none do)."""
    test = found.get("test") if isinstance(found, dict) else None  # as read back from a leaderboard.json
    shared, examples = (test.get("in_train"), test.get("examples")) if isinstance(test, dict) else (None, None)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (shared, examples)) or \
            not 0 < shared <= examples:
        return None
    ids = [str(i) for i in test.get("ids") or []][:SHOWN_IDS] if isinstance(test.get("ids"), list) else []
    rows = f"; test rows {', '.join(ids)}{', ...' if shared > len(ids) else ''}" if ids else ""
    return (f"{shared} of the {examples} test examples ({shared / examples:.1%}) also occur in the "
            f"training split (same input, ignoring case and spacing{rows}): the trained "
            "rungs have seen them, so their test scores may be optimistic next to the prompting rungs'. Remove the "
            "repeats from the data; or, where adaptlab makes the split, give the repeats of an input one value in "
            "a column and name it in data.group_column, so that they land on one side.")
