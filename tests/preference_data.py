"""Tiny preference data sets for the preference tests: a separable set where every chosen response carries a marker
word the rejected ones never have, and writers for each supported file shape."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

WORDS = ["king", "queen", "ghost", "sword", "castle", "night", "poison", "crown", "river", "storm"]
MARKER = "splendid"


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """prompt/chosen/rejected rows: the chosen response has MARKER among two random words, the rejected one three
    random words, so only the marker (not length or topic) tells them apart."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(WORDS)
        chosen = rng.sample(WORDS, 2) + [MARKER]
        rng.shuffle(chosen)
        rows.append({"prompt": f"tell me about the {topic} ({i})", "chosen": " ".join(chosen),
                     "rejected": " ".join(rng.sample(WORDS, 3))})
    return rows


def chat_rows(rows: list[dict]) -> list[dict]:
    """The same pairs as chat conversations with an implicit prompt (shared user turn)."""
    out = []
    for r in rows:
        user = {"role": "user", "content": r["prompt"]}
        out.append({"chosen": [user, {"role": "assistant", "content": r["chosen"]}],
                    "rejected": [user, {"role": "assistant", "content": r["rejected"]}]})
    return out


def write_rows(path: Path, rows: list[dict]) -> Path:
    """JSON lines (.jsonl), CSV (.csv) or Parquet (.parquet), by the suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)
    return path
