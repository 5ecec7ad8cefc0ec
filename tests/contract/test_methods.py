"""One contract for every registered classification rung, on a tiny random BERT.

It trains; what it may train changes; what it must not train doesn't; saving and loading gives identical
predictions; the cost accounting agrees with the model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import write_config

from adaptlab.config import load_ladder
from adaptlab.methods import METHODS
from adaptlab.methods._causal import GenerativeMethod
from adaptlab.pipeline import build_method, prepare

# Rungs over generative models have their own contract on tiny GPT-2/Llama/T5 (test_generative_methods.py);
# pre-training stages that predict nothing (domain_mlm) theirs in tests/e2e/test_domain_mlm.py.
CLASSIFICATION = [n for n in METHODS.names() if "classification" in METHODS.get(n).tasks
                  and not issubclass(METHODS.get(n), GenerativeMethod) and METHODS.get(n).predicts]
FAST = {"epochs": 1, "batch_size": 16, "learning_rate": 1e-2, "evals_per_epoch": 0, "logging_steps": 2,
        "num_iterations": 4}
#: Rungs that train every weight: nothing is frozen.
TRAIN_EVERYTHING = ("full", "setfit")


def _params(name: str) -> dict:
    fields = METHODS.get(name).Params.model_fields
    return {k: v for k, v in FAST.items() if k in fields}


# Every rung with a classification head, once more with each head that is not the default (mean pooling).
HEADS = ["pooler", "cls"]
HEADED = [n for n in CLASSIFICATION if "head" in METHODS.get(n).Params.model_fields]
RUNGS = [(n, n, _params(n)) for n in CLASSIFICATION] + [
    (f"{n}_{h}", n, {**_params(n), "head": h}) for n in HEADED for h in HEADS]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("contract")
    import csv

    from tests.conftest import sentiment_rows

    data = tmp / "data.csv"
    with open(data, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(sentiment_rows(96))
    rungs = [{"method": m, "name": name, "params": p} for name, m, p in RUNGS]
    return prepare(load_ladder(write_config(tmp, data, tiny_bert, rungs)))


def test_every_method_is_covered():
    assert {"embedding_zero_shot", "few_shot", "linear_probe", "head_only", "top_layers", "full", "lora",
            "setfit"} <= set(CLASSIFICATION)
    assert "domain_mlm" not in CLASSIFICATION
    assert {"head_only", "top_layers", "full", "lora"} <= set(HEADED)


@pytest.mark.parametrize("name", [r[0] for r in RUNGS])
def test_method_contract(name, ladder, tmp_path):
    rung = ladder.spec.rung(name)
    method = build_method(rung, ladder.ctx)
    method.setup()
    trainable_before = method.trainable_state()
    frozen_before = method.frozen_state()
    assert frozen_before or rung.method in TRAIN_EVERYTHING, "a frozen-base method must expose its frozen weights"

    method.fit(ladder.data, tmp_path / "work")

    trainable_after = method.trainable_state()
    if method.trains:
        assert trainable_after, f"{name} declares it trains but has no trainable state"
        unchanged = [k for k, v in trainable_before.items() if torch.equal(v, trainable_after[k])]
        assert not unchanged, f"{name}: trainable tensors did not change: {unchanged[:5]}"
    else:
        assert not trainable_after
        assert method.parameter_counts()[0] == 0
    frozen_after = method.frozen_state()
    assert frozen_after.keys() == frozen_before.keys()
    changed = [k for k in frozen_before if not torch.equal(frozen_before[k], frozen_after[k])]
    assert not changed, f"{name}: frozen tensors changed: {changed[:5]}"

    trainable, total = method.parameter_counts()
    assert 0 <= trainable <= total
    if method.trains:
        assert trainable == sum(v.numel() for v in trainable_after.values())

    texts, pairs = ladder.data.test.texts, ladder.data.test.pairs
    probs = method.predict_proba(texts, pairs)
    assert probs.shape == (len(texts), ladder.ctx.num_labels)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    method.save(tmp_path / "weights")
    assert not list((tmp_path / "weights").rglob("*.bin")) and not list((tmp_path / "weights").rglob("*.pt"))
    reloaded = type(method).load(tmp_path / "weights", method.params, ladder.ctx)
    np.testing.assert_array_equal(reloaded.predict_proba(texts, pairs), probs)
