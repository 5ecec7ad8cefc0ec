"""One contract for every rung that declares token classification, on a tiny random BERT and a separable set.

Trained rungs learn (entity F1 well above the no-entity floor), change only what they may train, and predict the
same after save -> load; rungs that don't train keep their weights; the cost accounting agrees with the model.
"""

from __future__ import annotations

import pytest
import torch
from tests.ner_data import write_ner_config, write_ner_jsonl

from adaptlab.config import load_ladder
from adaptlab.methods import METHODS
from adaptlab.pipeline import build_method, prepare

TOKEN_RUNGS = [n for n in METHODS.names() if "token_classification" in METHODS.get(n).tasks]
FAST = {"epochs": 4, "batch_size": 8, "learning_rate": 2e-2, "evals_per_epoch": 0, "logging_steps": 5}
# Rungs with their own base model: ner_prompt answers with a tiny random Llama (it can't be right, but must run).
OWN = {"ner_prompt": {"model": "tiny-random-llama", "max_new_tokens": 8, "shots": 1},
       "top_layers": {"learning_rate": 3e-3}}  # the layers' own weights diverge at the head's learning rate


def _params(name: str) -> dict:
    fields = METHODS.get(name).Params.model_fields
    return {**{k: v for k, v in FAST.items() if k in fields}, **OWN.get(name, {})}


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("token_contract")
    data = write_ner_jsonl(tmp / "ner.jsonl", 160)
    rungs = [{"method": m, "params": _params(m)} for m in TOKEN_RUNGS]
    return prepare(load_ladder(write_ner_config(tmp, data, tiny_bert, rungs)))


def test_the_encoder_rungs_and_the_floors_declare_token_classification():
    assert {"linear_probe", "head_only", "top_layers", "lora", "full", "spacy_ner", "ner_prompt"} <= set(TOKEN_RUNGS)


@pytest.mark.parametrize("name", TOKEN_RUNGS)
def test_token_rung_contract(ladder, name, tmp_path):
    rung = ladder.spec.rung(name)
    method = build_method(rung, ladder.ctx)
    method.setup()
    before_frozen = {k: v.clone() for k, v in method.frozen_state().items()}
    before_trained = {k: v.clone() for k, v in method.trainable_state().items()}
    method.fit(ladder.data, tmp_path / "work")
    records = ladder.task.predict(method, ladder.data.test)
    result = ladder.task.evaluate(records, {**ladder.data.meta(), "seed": 0})
    assert all(torch.equal(before_frozen[k], v) for k, v in method.frozen_state().items()), "frozen weights moved"
    trainable, total = method.parameter_counts()
    if method.trains:
        after = method.trainable_state()
        assert after and any(k not in before_trained or not torch.equal(before_trained[k], after[k])
                             for k in after), "nothing trained"
        assert 0 < trainable <= total
        assert result["metrics"]["entity_micro_f1"] > 0.5, result["metrics"]  # no entity found scores 0
    else:
        assert trainable == 0 and total > 0
    method.save(tmp_path / "weights")
    again = type(method).load(tmp_path / "weights", method.params, ladder.ctx)
    assert again.predict_tags(ladder.data.test.tokens).tags == [r["prediction"] for r in records]


@pytest.mark.parametrize("name", ["linear_probe", "head_only"])
def test_a_word_without_sub_tokens_is_tagged_O_and_the_words_after_it_keep_their_own_tags(ladder, name, tmp_path):
    """A soft hyphen or a zero-width space gets no sub-token from BERT's tokenizer. It is tagged O, is not counted
    as cut by max_length, and every other word keeps its own state (the linear probe once shifted the words after
    it by one)."""
    method = build_method(ladder.spec.rung(name), ladder.ctx)
    method.setup()
    method.fit(ladder.data, tmp_path / "work")
    plain = ladder.data.test.tokens[:20]
    odd = [["\u00ad", *words[:2], "\u200b", *words[2:]] for words in plain]
    want, got = method.predict_tags(plain), method.predict_tags(odd)
    assert got.tags == [["O", *tags[:2], "O", *tags[2:]] for tags in want.tags]
    assert got.words_cut == [0] * len(odd) and any(t != "O" for tags in want.tags for t in tags)
