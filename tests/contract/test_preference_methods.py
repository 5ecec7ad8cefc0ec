"""One contract for every rung of the preference task (the preference rungs and the SFT rungs that learn the chosen
responses), on a tiny random Llama: it trains a few steps; what it may train changes and what it must not doesn't;
scores are finite, one per pair and response; saving writes safetensors only and loading gives identical scores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from tests.generative_data import one_torch_thread  # noqa: F401  (autouse)
from tests.preference_data import preference_rows, write_rows

from adaptlab.config import load_ladder
from adaptlab.methods import METHODS
from adaptlab.pipeline import build_method, prepare

PREFERENCE = [n for n in METHODS.names() if "preference" in METHODS.get(n).tasks]
FAST = {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-2, "evals_per_epoch": 0, "logging_steps": 1,
        "num_virtual_tokens": 4}
#: rung name -> (method, own params): every preference method, and DPO also with every weight training
CASES = {**{n: (n, {}) for n in PREFERENCE}, "dpo_full": ("dpo", {"lora": False, "learning_rate": 1e-3})}
WHOLE_MODEL = {"lm_full", "dpo_full"}  # nothing of the model stays frozen


def _params(method: str, own: dict) -> dict:
    fields = METHODS.get(method).Params.model_fields
    return {**{k: v for k, v in FAST.items() if k in fields}, **own}


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preference-contract")
    data = write_rows(tmp / "pairs.jsonl", preference_rows(32))
    cfg = {"name": "pref", "task": {"type": "preference", "forgetting_tokens": 64},
           "data": {"path": str(data), "test_size": 0.25, "validation_size": 0.0, "max_length": 64},
           "model": "tiny-random-llama", "seed": 0, "output_dir": str(tmp / "out"),
           "rungs": [{"method": m, "name": n, "params": _params(m, own)} for n, (m, own) in CASES.items()]}
    (tmp / "ladder.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return prepare(load_ladder(tmp / "ladder.yaml"))


def test_every_preference_rung_is_covered():
    assert {"base_preference", "dpo", "orpo", "reward_model", "lm_lora", "lm_full"} <= set(PREFERENCE)
    assert not METHODS.get("base_preference").trains and all(METHODS.get(n).trains for n in PREFERENCE
                                                                if n != "base_preference")


def _scores(method, ladder):
    test = ladder.data.test
    return method.score_pairs(test.prompts, test.chosen, test.rejected)


@pytest.mark.parametrize("name", list(CASES))
def test_preference_contract(name, ladder, tmp_path):
    method = build_method(ladder.spec.rung(name), ladder.ctx)
    method.setup()
    trainable_before, frozen_before = method.trainable_state(), method.frozen_state()
    assert bool(frozen_before) != (name in WHOLE_MODEL), "a frozen-base method must expose its frozen weights"

    fit = method.fit(ladder.data, tmp_path / "work")

    trainable_after = method.trainable_state()
    if method.trains:
        assert fit["steps"] == 2 and fit["tokens"] > 0
        unchanged = [k for k, v in trainable_before.items() if torch.equal(v, trainable_after[k])]
        assert trainable_after and not unchanged, f"{name}: trainable tensors did not change: {unchanged[:5]}"
        assert trainable_after.keys() == trainable_before.keys()
        trainable, total = method.parameter_counts()
        assert 0 < trainable < total or (name in WHOLE_MODEL and trainable == total)
        assert trainable == sum(v.numel() for v in trainable_after.values())
    else:
        assert not trainable_after and method.parameter_counts()[0] == 0
    frozen_after = method.frozen_state()
    assert frozen_after.keys() == frozen_before.keys()
    changed = [k for k in frozen_before if not torch.equal(frozen_before[k], frozen_after[k])]
    assert not changed, f"{name}: frozen tensors changed: {changed[:5]}"

    chosen, rejected = _scores(method, ladder)
    assert chosen.shape == rejected.shape == (len(ladder.data.test),)
    assert np.isfinite(chosen).all() and np.isfinite(rejected).all() and not np.array_equal(chosen, rejected)

    method.save(tmp_path / "weights")
    assert not list((tmp_path / "weights").rglob("*.bin")) and not list((tmp_path / "weights").rglob("*.pt"))
    reloaded = type(method).load(tmp_path / "weights", method.params, ladder.ctx)
    again = _scores(reloaded, ladder)
    np.testing.assert_allclose(again[0], chosen, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again[1], rejected, rtol=1e-5, atol=1e-6)
