"""A synthetic, separable NER set for tests: each entity type has its own words, so a tag follows from the word."""

from __future__ import annotations

import json
import random
from pathlib import Path

PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
PLACES = ["paris", "berlin", "madrid", "rome", "vienna", "prague", "lisbon", "oslo"]
FILLER = ["went", "to", "see", "the", "met", "in", "yesterday", "with", "and", "later", "from", "visited"]


def ner_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` sentences of tokens + BIO tags: people (PER, some two words long) and places (LOC) among filler."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 6)):
            pick = rng.random()
            if pick < 0.2:
                names = rng.sample(PEOPLE, rng.choice([1, 2]))
                tokens += names
                tags += ["B-PER"] + ["I-PER"] * (len(names) - 1)
            elif pick < 0.4:
                tokens.append(rng.choice(PLACES))
                tags.append("B-LOC")
            else:
                tokens.append(rng.choice(FILLER))
                tags.append("O")
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def write_ner_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in ner_rows(n, seed)) + "\n", encoding="utf-8")
    return path


def write_ner_config(tmp_path: Path, data: Path, model: str, rungs: list[dict], **extra) -> Path:
    import yaml

    cfg = {"name": "tiny_ner", "task": {"type": "token_classification"},
           "data": {"path": str(data), "test_size": 0.25, "validation_size": 0.1, "max_length": 32},
           "model": model, "seed": 0, "output_dir": str(tmp_path / "out"), "rungs": rungs, **extra}
    path = tmp_path / "ner.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path
