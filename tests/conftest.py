"""Shared fixtures: an isolated ADAPTLAB_HOME, a tiny random BERT built once per session, synthetic data."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSITIVE = ["great", "wonderful", "brilliant", "moving", "delightful", "superb", "charming", "excellent"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "tedious", "clumsy", "lifeless", "dreadful"]
NEUTRAL = ["film", "movie", "story", "plot", "cast", "script", "ending", "director"]


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """A synthetic two-class dataset whose label is carried by sentiment words (learnable in a few steps)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2) + rng.sample(NEUTRAL, 2)
        rng.shuffle(words)
        rows.append({"text": "the " + " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="session", autouse=True)
def _frozen_imports():
    """The pipeline collects garbage before each rung (adaptlab.cost.release_memory); a full collection walks every
    tracked object, and a test process holds the libraries' half a million: set them aside once (gc.freeze), so the
    hundreds of rungs the suite runs don't each walk them."""
    import gc

    import adaptlab.methods  # noqa: F401  (the libraries every rung imports)
    import adaptlab.pipeline  # noqa: F401

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("adaptlab_home")
    os.environ["ADAPTLAB_HOME"] = str(home)
    return home


@pytest.fixture(autouse=True)
def _home(session_home, monkeypatch, tmp_path):
    """Each test gets its own run registry but shares the built tiny models."""
    home = tmp_path / "home"
    home.mkdir()
    models = session_home / "models"
    models.mkdir(exist_ok=True)
    (home / "models").symlink_to(models)
    monkeypatch.setenv("ADAPTLAB_HOME", str(home))
    yield home


@pytest.fixture(scope="session")
def tiny_bert(session_home) -> str:
    from adaptlab.models import resolve_model

    resolve_model("tiny-random-bert", cache_dir=session_home / "models")
    return "tiny-random-bert"


def write_sentiment_csv(path: Path, n: int) -> Path:
    """``n`` rows of :func:`sentiment_rows` as a text,label CSV file at ``path``."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(sentiment_rows(n))
    return path


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    return write_sentiment_csv(tmp_path / "sentiment.csv", 240)


@pytest.fixture(scope="session")
def sentiment_run(tmp_path_factory, tiny_bert) -> Path:
    """A finished classification rung (linear probe on the tiny BERT) over pos/neg sentiment words, built once: a
    reward for the judges and the grpo rung."""
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    tmp = tmp_path_factory.mktemp("sentiment")
    config = write_config(tmp, write_sentiment_csv(tmp / "s.csv", 120), tiny_bert, [{"method": "linear_probe"}])
    board = compare(prepare(load_ladder(config)))
    assert board["rungs"][0]["status"] == "ok", board["rungs"][0]["error"]
    return tmp / "out" / "linear_probe"


def write_config(tmp_path: Path, data_path: Path, model: str, rungs: list[dict], **extra) -> Path:
    import yaml

    cfg = {
        "name": "tiny",
        "task": {"type": "classification"},
        "data": {"path": str(data_path), "test_size": 0.25, "validation_size": 0.1, "max_length": 16},
        "model": model,
        "seed": 0,
        "output_dir": str(tmp_path / "out"),
        "rungs": rungs,
        **extra,
    }
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture
def copy_tree():
    def _copy(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        return dst

    return _copy
