"""Tiny data sets and ladder configs for the generative tests (written per test, a few dozen rows each)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import yaml
from tests.conftest import sentiment_rows

WORDS = ["king", "queen", "ghost", "sword", "castle", "night", "poison", "crown"]


def generation_rows(n: int, seed: int = 0) -> list[dict]:
    """prompt/completion rows of a copying task: 'repeat: a b c' -> 'a b c'."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = " ".join(rng.sample(WORDS, 3))
        rows.append({"prompt": f"repeat: {words}", "completion": words})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Rows as CSV, or as JSON lines when the path ends in .jsonl."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_sentiment_csv(path: Path, n: int) -> Path:
    return write_csv(path, sentiment_rows(n))


def write_generation_csv(path: Path, n: int) -> Path:
    return write_csv(path, generation_rows(n))


def write_ladder(tmp_path: Path, data: Path, model: str, rungs: list[dict], task: dict | None = None,
                 **data_extra) -> Path:
    """A ladder config for generative rungs: 64-token budget, no validation split, a short forgetting slice."""
    cfg = {
        "name": "gen",
        "task": {"forgetting_tokens": 64, "generation": {"max_new_tokens": 4}, **(task or {"type": "generation"})},
        "data": {"path": str(data), "test_size": 0.25, "validation_size": 0.0, "max_length": 64, **data_extra},
        "model": model,
        "seed": 0,
        "output_dir": str(tmp_path / "out"),
        "rungs": rungs,
    }
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads spin-wait on each other when the machine is busy."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
