"""One contract for every generative rung, on tiny random GPT-2, Llama and T5 models, for each task it supports.

It trains (a few steps); what it may train changes; what it must not train doesn't; predictions are well formed;
sampling with the same seed gives the same tokens; saving and loading gives identical predictions and tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.generative_data import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    one_torch_thread,
    write_csv,
    write_generation_csv,
    write_ladder,
    write_sentiment_csv,
)

from adaptlab.config import GenerationSpec, load_ladder
from adaptlab.methods import METHODS
from adaptlab.methods._causal import GenerativeMethod
from adaptlab.pipeline import build_method, prepare

#: grpo learns from a finished reward run, which this contract has none of: tests/e2e/test_grpo.py holds its contract
GENERATIVE = [n for n in METHODS.names() if issubclass(METHODS.get(n), GenerativeMethod) and n != "grpo"]
MODELS = ("tiny-random-gpt2", "tiny-random-llama", "tiny-random-t5")
FAST = {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-2, "evals_per_epoch": 0, "logging_steps": 1,
        "num_virtual_tokens": 4, "shots": 2, "max_new_tokens": 3}
GREEDY = GenerationSpec(max_new_tokens=4, batch_size=4)
SAMPLED = GenerationSpec(max_new_tokens=5, do_sample=True, temperature=2.0, top_k=50, seed=7, batch_size=4)
CASES = [(name, model, task) for model in MODELS for task in ("classification", "generation") for name in GENERATIVE
         if task in METHODS.get(name).tasks]


def _params(name: str) -> dict:
    fields = METHODS.get(name).Params.model_fields
    return {k: v for k, v in FAST.items() if k in fields}


@pytest.fixture(scope="module")
def ladders(tmp_path_factory):
    built: dict = {}

    def get(task: str, model: str):
        if (task, model) not in built:
            tmp = tmp_path_factory.mktemp(f"{task}-{model}")
            data = write_sentiment_csv(tmp / "d.csv", 32) if task == "classification" else \
                write_generation_csv(tmp / "d.csv", 32)
            rungs = [{"method": n, "params": _params(n)} for n in GENERATIVE if task in METHODS.get(n).tasks]
            config = write_ladder(tmp, data, model, rungs, task={"type": task})
            built[(task, model)] = prepare(load_ladder(config))
        return built[(task, model)]

    return get


def test_every_generative_method_is_covered():
    expected = {"zero_shot_prompt", "free_text_prompt", "few_shot_prompt", "prompt_tuning", "lm_lora", "lm_ia3",
                "lm_full", "qlora"}
    assert expected <= set(GENERATIVE)
    assert all({"classification", "generation"} <= METHODS.get(n).tasks for n in expected - {"free_text_prompt"})


def _predict(method, ladder, task: str):
    test = ladder.data.test
    if task == "classification":
        return method.predict_proba(test.texts[:6])
    return method.generate_tokens(test.inputs[:4], settings=GREEDY)


@pytest.mark.parametrize("name, model, task", CASES, ids=[f"{n}-{m[12:]}-{t[:3]}" for n, m, t in CASES])
def test_generative_contract(name, model, task, ladders, tmp_path):
    ladder = ladders(task, model)
    method = build_method(ladder.spec.rung(name), ladder.ctx)
    method.setup()
    trainable_before, frozen_before = method.trainable_state(), method.frozen_state()
    assert frozen_before or name == "lm_full", "a frozen-base method must expose its frozen weights"

    fit = method.fit(ladder.data, tmp_path / "work")

    trainable_after = method.trainable_state()
    if method.trains:
        assert fit["steps"] == 2 and fit["tokens"] > 0
        unchanged = [k for k, v in trainable_before.items() if torch.equal(v, trainable_after[k])]
        assert trainable_after and not unchanged, f"{name}: trainable tensors did not change: {unchanged[:5]}"
        trainable, total = method.parameter_counts()
        assert 0 < trainable <= total and trainable == sum(v.numel() for v in trainable_after.values())
    else:
        assert not trainable_after and method.parameter_counts()[0] == 0
    frozen_after = method.frozen_state()
    assert frozen_after.keys() == frozen_before.keys()
    changed = [k for k in frozen_before if not torch.equal(frozen_before[k], frozen_after[k])]
    assert not changed, f"{name}: frozen tensors changed: {changed[:5]}"

    before = _predict(method, ladder, task)
    if task == "classification":
        assert before.shape == (6, 2)
        answered = ~np.isnan(before).any(axis=1)  # free text may name no label: a row of NaN
        np.testing.assert_allclose(before[answered].sum(axis=1), 1.0, rtol=1e-5)
        assert name == "free_text_prompt" or answered.all()
    inputs = ladder.data.test.inputs[:3] if task == "generation" else ladder.data.test.texts[:3]
    sampled = method.generate_tokens(inputs, settings=SAMPLED)
    assert sampled == method.generate_tokens(inputs, settings=SAMPLED), "same seed, different tokens"
    assert all(len(ids) <= SAMPLED.max_new_tokens for ids in sampled)

    method.save(tmp_path / "weights")
    assert not list((tmp_path / "weights").rglob("*.bin")) and not list((tmp_path / "weights").rglob("*.pt"))
    reloaded = type(method).load(tmp_path / "weights", method.params, ladder.ctx)
    after = _predict(reloaded, ladder, task)
    if task == "classification":
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    else:
        assert after == before
    assert reloaded.generate_tokens(inputs, settings=SAMPLED) == sampled


def test_chat_data_trains_on_the_assistant_turn_only(tmp_path):
    """Chat messages: the prompt is every turn before the last assistant turn, which is the answer."""
    rows = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": w}]}
            for w in ("king", "queen", "ghost", "sword", "crown", "night", "castle", "poison") * 2]
    data = write_csv(tmp_path / "chat.jsonl", rows)
    config = write_ladder(tmp_path, data, "tiny-random-llama", [{"method": "lm_lora", "params": _params("lm_lora")}])
    ladder = prepare(load_ladder(config))
    assert ladder.data.meta()["format"] == "chat"
    method = build_method(ladder.spec.rung("lm_lora"), ladder.ctx)
    method.setup()
    x, ref = ladder.data.train.inputs[0], ladder.data.train.references[0]
    enc = method.formatter.encode(x, None, ref)
    assert method.tokenizer.decode(enc.answer_ids) == f"{ref}<|im_end|>"
    assert method.tokenizer.decode(enc.prompt_ids).endswith("<|im_start|>assistant\n")
    assert method.fit(ladder.data, tmp_path / "work")["answer_tokens"] == sum(
        len(method.formatter.encode(x, None, r).answer_ids)
        for x, r in zip(ladder.data.train.inputs, ladder.data.train.references))
