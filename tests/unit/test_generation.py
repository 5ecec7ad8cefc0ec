"""Prompt formatting, loss masking, truncation, decoding, parsing, forgetting, and every bad input found before
training (tiny random models, a few dozen rows)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from tests.conftest import sentiment_rows
from tests.generative_data import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    one_torch_thread,
    write_csv,
    write_generation_csv,
    write_ladder,
    write_sentiment_csv,
)

from adaptlab.config import GenerationSpec, TaskSpec, load_ladder
from adaptlab.errors import ConfigError, DataError, UserError
from adaptlab.generation.decoding import cut_at_stop, explain, finish_text, generate_ids
from adaptlab.generation.formatting import Formatter, PromptStyle, render_template
from adaptlab.generation.lm import answer_logprobs, load_model, load_tokenizer, model_kind, text_windows
from adaptlab.methods.free_text_prompt import parse_label
from adaptlab.models import resolve_model
from adaptlab.pipeline import build_method, prepare


@pytest.fixture(scope="module")
def gpt2():
    resolved = resolve_model("tiny-random-gpt2")
    return load_tokenizer(resolved.location), load_model(resolved, "causal").eval()


@pytest.fixture(scope="module")
def t5_tokenizer():
    return load_tokenizer(resolve_model("tiny-random-t5").location)


def _formatter(tok, kind="causal", chat=True, max_length=64, template="{text}\nAnswer: {labels}", side="end"):
    style = PromptStyle(template, "Be brief.", chat, side, ("yes", "no"))
    return Formatter(tok, style, kind, max_length)


# ------------------------------------------------------------------------------------------------ formatting


def test_render_template_fills_placeholders_once():
    out = render_template("A: {text} | B: {text_pair} | {labels}", "x {labels}", "y", "p, q")
    assert out == "A: x {labels} | B: y | p, q"


def test_chat_masking_labels_are_minus_100_on_every_prompt_token(gpt2):
    tok, _ = gpt2
    enc = _formatter(tok).encode("the ghost", None, "yes")
    assert enc.labels[: len(enc.prompt_ids)] == [-100] * len(enc.prompt_ids)
    assert enc.labels[len(enc.prompt_ids):] == enc.answer_ids
    assert tok.decode(enc.answer_ids) == "yes<|im_end|>"  # the end of the turn is trained, the newline after is not
    assert tok.decode(enc.prompt_ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nthe ghost\nAnswer: yes, no<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_plain_masking_answer_after_a_space_then_eos(gpt2):
    tok, _ = gpt2
    enc = _formatter(tok, chat=False).encode("the ghost", None, "yes")
    assert tok.decode(enc.prompt_ids) == "Be brief.\n\nthe ghost\nAnswer: yes, no"
    assert tok.decode(enc.answer_ids) == " yes<|im_end|>"
    assert enc.labels.count(-100) == len(enc.prompt_ids) and len(enc.labels) == len(enc.input_ids)


def test_seq2seq_answer_is_the_decoder_target(t5_tokenizer):
    enc = _formatter(t5_tokenizer, kind="seq2seq", chat=False).encode("the ghost", None, "yes")
    assert t5_tokenizer.decode(enc.prompt_ids) == "Be brief.\n\nthe ghost\nAnswer: yes, no</s>"
    assert t5_tokenizer.decode(enc.answer_ids) == "yes</s>"


def test_collator_pads_labels_with_minus_100(tmp_path):
    config = write_ladder(tmp_path, write_generation_csv(tmp_path / "g.csv", 16), "tiny-random-gpt2",
                          [{"method": "lm_lora"}])
    ladder = prepare(load_ladder(config))
    method = build_method(ladder.spec.rung("lm_lora"), ladder.ctx)
    method.setup_formatting()
    ds = method.encode_split(ladder.data.train)
    batch = method.collator()([ds[0], ds[1]])
    for row, example in enumerate((ds[0], ds[1])):
        n, prompt = len(example["input_ids"]), example["labels"].count(-100)
        labels = batch["labels"][row].tolist()
        assert labels[:prompt] == [-100] * prompt  # prompt: no loss
        assert labels[prompt:n] == example["input_ids"][prompt:]  # answer: loss
        assert labels[n:] == [-100] * (len(labels) - n)  # padding: no loss
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (len(labels) - n)


def test_long_input_is_cut_and_the_instruction_kept(gpt2):
    tok, _ = gpt2
    text = " ".join(["ghost"] * 200)
    enc = _formatter(tok, max_length=48).encode(text, None, "yes")
    assert len(enc.input_ids) <= 48 and enc.cut_tokens > 150
    assert tok.decode(enc.prompt_ids).endswith("Answer: yes, no<|im_end|>\n<|im_start|>assistant\n")
    start = _formatter(tok, max_length=48, side="start").encode("first " + text, None, "yes")
    assert "first" not in tok.decode(start.prompt_ids) and "ghost" in tok.decode(start.prompt_ids)


def test_prompt_overhead_larger_than_the_budget_is_a_user_error(gpt2):
    tok, _ = gpt2
    with pytest.raises(UserError, match="without its input already takes .* tokens"):
        _formatter(tok, max_length=12).encode("x", None, "yes")


# ----------------------------------------------------------------------------------------------- model kinds


@pytest.mark.parametrize("spec, kind", [("tiny-random-gpt2", "causal"), ("tiny-random-llama", "causal"),
                                        ("tiny-random-t5", "seq2seq"), ("tiny-random-bert", "encoder")])
def test_model_kind(spec, kind):
    from adaptlab.generation.lm import load_config

    assert model_kind(load_config(resolve_model(spec))) == kind


def test_answer_logprobs_match_the_model_loss(gpt2):
    tok, model = gpt2
    fmt = _formatter(tok)
    examples = [fmt.encode("the ghost", None, "yes"), fmt.encode("a much longer input text here", None, "no")]
    sums, counts = answer_logprobs(model, "causal", examples, pad_id=tok.pad_token_id, batch_size=2)
    for e, s, c in zip(examples, sums, counts):
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss
        assert c == len(e.answer_ids)
        assert s == pytest.approx(-loss.item() * c, rel=1e-4)


def test_text_windows_score_every_token_but_the_first_of_each_window():
    windows = text_windows(list(range(10)), "causal", 4)
    assert [(w.prompt_ids, w.answer_ids) for w in windows] == [([0], [1, 2, 3]), ([4], [5, 6, 7]), ([8], [9])]
    s2s = text_windows(list(range(6)), "seq2seq", 3)
    assert [(w.prompt_ids, w.answer_ids) for w in s2s] == [([], [0, 1, 2]), ([0, 1, 2], [3, 4, 5])]


# -------------------------------------------------------------------------------------------------- decoding


def test_stop_strings_cut_the_output():
    assert cut_at_stop("hello\nworld. bye", ["\n", "."]) == "hello"
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"


def test_batched_left_padded_generation_equals_one_at_a_time(gpt2):
    tok, model = gpt2
    prompts = [tok("to be or not")["input_ids"], tok("the ghost of the king is here")["input_ids"]]
    settings = GenerationSpec(max_new_tokens=6, batch_size=2)
    together = generate_ids(model, tok, "causal", prompts, settings, seed=0)
    alone = [generate_ids(model, tok, "causal", [p], settings, seed=0)[0] for p in prompts]
    assert together == alone and all(len(t) == 6 for t in together)


def test_explain_chooses_what_generate_chooses(gpt2):
    tok, model = gpt2
    prompt = tok("to be or not")["input_ids"]
    for settings in (GenerationSpec(max_new_tokens=5),
                     GenerationSpec(max_new_tokens=5, do_sample=True, temperature=3.0, top_k=40, top_p=0.95)):
        steps = explain(model, tok, "causal", prompt, settings, seed=3, top_k=4)
        assert [s.token_id for s in steps] == generate_ids(model, tok, "causal", [prompt], settings, seed=3)[0]
        for s in steps:
            assert len(s.top) == 4 and s.top[0][1] >= s.top[-1][1] and 0 < s.probability <= 1
    greedy = explain(model, tok, "causal", prompt, GenerationSpec(max_new_tokens=3), seed=0)
    assert all(s.token == s.top[0][0] for s in greedy)


def test_finish_text_skips_special_tokens(gpt2):
    tok, _ = gpt2
    assert finish_text(tok, tok("king. queen")["input_ids"] + [tok.eos_token_id], ["."]) == "king"


@pytest.mark.parametrize("answer, expected", [
    ("Positive.", 0), ("negative", 1), ("The review is positive", 0), ("I think it's NEGATIVE!", 1),
    ("positive or negative", None), ("This movie review is", None), ("", None), ("positively", None),
])
def test_parse_label(answer, expected):
    assert parse_label(answer, ["positive", "negative"]) == expected


# --------------------------------------------------------------------------------------------- task metrics


def test_generation_evaluate_perplexity_and_intervals():
    from adaptlab.tasks import get_task

    records = [
        {"id": "1", "reference": "the king is dead", "prediction": "the king is dead", "nll": 2.0, "tokens": 4},
        {"id": "2", "reference": "long live the king", "prediction": "long live the queen", "nll": 6.0, "tokens": 4},
    ]
    result = get_task("generation").evaluate(records, {"seed": 0})
    m = result["metrics"]
    assert m["exact_match"] == 0.5 and m["rougeL"] == pytest.approx((1.0 + 0.75) / 2)
    assert m["perplexity"] == pytest.approx(math.exp(8.0 / 8))
    for name in ("rougeL", "bleu", "chrf", "exact_match", "perplexity"):
        low, high = result["interval"][name]
        assert low <= m[name] <= high


def test_no_answer_counts_as_wrong_and_macro_stays_over_the_labels():
    from adaptlab.tasks import get_task

    records = [{"reference": r, "prediction": p} for r, p in
               [("a", "a"), ("a", None), ("b", "b"), ("b", "a")]]
    result = get_task("classification").evaluate(records, {"label_names": ["a", "b"], "seed": 0})
    m = result["metrics"]
    assert m["accuracy"] == 0.5
    # a: precision 1/2, recall 1/2, F1 1/2; b: precision 1, recall 1/2, F1 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["macro_precision"] == pytest.approx(0.75) and m["macro_recall"] == pytest.approx(0.5)
    assert result["labels"] == ["a", "b", "(no answer)"] and result["confusion_matrix"][0] == [1, 0, 1]
    low, high = result["interval"]["macro_f1"]
    assert 0 <= low <= m["macro_f1"] <= high <= 1


# ------------------------------------------------------------------------------------------------ forgetting


def test_forgetting_base_once_delta_zero_for_prompting(tmp_path):
    from adaptlab.methods import _causal

    config = write_ladder(tmp_path, write_generation_csv(tmp_path / "g.csv", 16), "tiny-random-llama",
                          [{"method": "zero_shot_prompt"}, {"method": "lm_ia3", "params": {"max_steps": 1}}])
    ladder = prepare(load_ladder(config))
    _causal._BASE_PERPLEXITY.clear()
    zero = build_method(ladder.spec.rung("zero_shot_prompt"), ladder.ctx)
    zero.setup()
    f = zero.forgetting()
    assert f["delta"] == 0 and f["base_ppl"] == f["adapted_ppl"] > 1 and len(_causal._BASE_PERPLEXITY) == 1
    ia3 = build_method(ladder.spec.rung("lm_ia3"), ladder.ctx)
    ia3.setup()
    with torch.no_grad():
        for p in ia3.model.parameters():
            if p.requires_grad:
                p.mul_(1.5)  # an adapted model: IA3 vectors moved away from 1
    g = ia3.forgetting()
    assert g["base_ppl"] == f["base_ppl"] and g["adapted_ppl"] != g["base_ppl"]
    assert g["delta"] == pytest.approx(g["adapted_ppl"] - g["base_ppl"], abs=1e-3)
    assert len(_causal._BASE_PERPLEXITY) == 1  # the baseline was reused, not recomputed


# ----------------------------------------------------------------------------------------------- bad input


def _ladder(tmp_path, rows, model="tiny-random-gpt2", rungs=None, task=None, **data):
    data_file = write_csv(tmp_path / ("d.jsonl" if "messages" in rows[0] else "d.csv"), rows)
    return write_ladder(tmp_path, data_file, model, rungs or [{"method": "lm_lora"}], task=task, **data)


def _rows(n=16):
    from tests.generative_data import generation_rows

    return generation_rows(n)


def test_template_without_input_placeholder_is_a_config_error(tmp_path):
    config = _ladder(tmp_path, _rows(), task={"type": "generation", "template": "Say something nice."})
    with pytest.raises(ConfigError, match="no {text} placeholder"):
        load_ladder(config)
    config = _ladder(tmp_path, _rows(), task={"type": "generation", "template": "{txt}"})
    with pytest.raises(ConfigError, match="Did you mean 'text'"):
        load_ladder(config)


def test_chat_data_without_an_assistant_turn_names_the_row(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 12
    rows[5] = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(DataError, match="row 6.*no assistant turn"):
        prepare(load_ladder(_ladder(tmp_path, rows)))


def test_empty_completion_names_the_row(tmp_path):
    rows = _rows()
    rows[3]["completion"] = "  "
    with pytest.raises(DataError, match="'completion' is empty in 1 row: row 4"):
        prepare(load_ladder(_ladder(tmp_path, rows)))


def test_causal_rung_on_an_encoder_only_model_fails_before_training(tmp_path, tiny_bert):
    config = _ladder(tmp_path, _rows(), model="tiny-random-bert")
    with pytest.raises(UserError, match="encoder-only model"):
        prepare(load_ladder(config))


def test_prompt_tuning_needs_input_embeddings(tmp_path, monkeypatch):
    from adaptlab.methods import prompt_tuning

    monkeypatch.setattr(prompt_tuning, "input_embeddings", lambda model: None)
    config = _ladder(tmp_path, _rows(), rungs=[{"method": "prompt_tuning"}])
    with pytest.raises(UserError, match="exposes no input embeddings"):
        prepare(load_ladder(config))


def test_label_words_must_differ_and_name_labels(tmp_path):
    rows = sentiment_rows(16)
    with pytest.raises(ConfigError, match="same word"):
        load_ladder(_ladder(tmp_path, rows, task={"type": "classification",
                                                   "label_words": {"pos": "good", "neg": "Good"}}))
    config = _ladder(tmp_path, rows, task={"type": "classification", "label_words": {"postive": "good"}})
    with pytest.raises(UserError, match=r"\['postive'\] are not labels"):
        prepare(load_ladder(config))


def test_constrained_choice_without_labels_is_refused(tmp_path):
    ladder = prepare(load_ladder(_ladder(tmp_path, _rows(), rungs=[{"method": "zero_shot_prompt"}])))
    method = build_method(ladder.spec.rung("zero_shot_prompt"), ladder.ctx)
    method.setup()
    with pytest.raises(UserError, match="constrained choice needs labels"):
        method.predict_proba(["a text"])


def test_max_length_beyond_the_context_window_says_by_how_much(tmp_path):
    config = _ladder(tmp_path, _rows(), max_length=600)
    with pytest.raises(UserError, match="88 more than the context window of 'tiny-random-gpt2' \\(512 tokens\\)"):
        prepare(load_ladder(config))


def test_chat_data_on_a_seq2seq_model_is_refused(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 12
    with pytest.raises(UserError, match="chat messages .* seq2seq"):
        prepare(load_ladder(_ladder(tmp_path, rows, model="tiny-random-t5")))


def test_group_column_keeps_groups_on_one_side(tmp_path):
    rows = [{"context": f"c{i}", "reply": f"r{i}", "conv": str(i // 2)} for i in range(40)]  # 20 pairs of turns
    ladder = prepare(load_ladder(_ladder(tmp_path, rows, rungs=[{"method": "zero_shot_prompt"}],
                                         group_column="conv")))
    group = {f"c{i}": i // 2 for i in range(40)}
    test_groups = {group[x] for x in ladder.data.test.inputs}
    train_groups = {group[x] for x in ladder.data.train.inputs}
    assert len(ladder.data.test) == 10 and not (test_groups & train_groups)
    # whole groups are held out when splitting: no row is lost (rows were dropped when rows were split one by one)
    assert ladder.data.meta()["dropped_for_groups"] == 0
    assert len(ladder.data.train) + len(ladder.data.validation) + len(ladder.data.test) == 40


def test_task_spec_defaults_are_documented():
    for name, field in TaskSpec.model_fields.items():
        assert field.description, f"TaskSpec.{name} has no description"
    assert yaml.safe_dump(TaskSpec().model_dump(mode="json"))


@pytest.mark.parametrize("spec", ["tiny-random-gpt2", "tiny-random-llama"])
def test_shared_prefix_from_the_kv_cache_scores_like_full_sequences(spec, monkeypatch):
    from adaptlab.generation import lm
    from adaptlab.generation.formatting import Demo

    resolved = resolve_model(spec)
    tok, model = load_tokenizer(resolved.location), load_model(resolved, "causal").eval()
    fmt = _formatter(tok, max_length=200)
    demos = [Demo("one two", "yes"), Demo("three four", "no")]
    examples = [fmt.encode(t, None, w, demos) for t in ("a b c", "the ghost of hamlet", "x") for w in ("yes", "no")]
    assert lm.shared_prefix([e.prompt_ids for e in examples]) >= lm.MIN_SHARED_PREFIX
    cached = answer_logprobs(model, "causal", examples, pad_id=tok.pad_token_id, batch_size=4)
    monkeypatch.setattr(lm, "MIN_SHARED_PREFIX", 10**9)
    full = answer_logprobs(model, "causal", examples, pad_id=tok.pad_token_id, batch_size=4)
    np.testing.assert_allclose(cached[0], full[0], rtol=1e-5)
    assert (cached[1] == full[1]).all()


def test_contextual_calibration_divides_by_the_content_free_prior(tmp_path):
    from adaptlab.methods._causal import CONTENT_FREE

    rungs = [{"method": "zero_shot_prompt"},
             {"method": "zero_shot_prompt", "name": "cal", "params": {"calibrate": True}}]
    ladder = prepare(load_ladder(_ladder(tmp_path, sentiment_rows(16), rungs=rungs, task={"type": "classification"})))
    raw, cal = (build_method(ladder.spec.rung(n), ladder.ctx) for n in ("zero_shot_prompt", "cal"))
    raw.setup()
    cal.setup()
    texts = ladder.data.test.texts
    prior = raw.predict_proba(list(CONTENT_FREE)).mean(axis=0)
    expected = raw.predict_proba(texts) / prior
    np.testing.assert_allclose(cal.predict_proba(texts), expected / expected.sum(axis=1, keepdims=True), rtol=1e-4)


def test_few_shot_similar_puts_the_nearest_training_example_first(tmp_path, tiny_bert):
    rungs = [{"method": "few_shot_prompt",
              "params": {"shots": 2, "selection": "similar", "embedding_model": "tiny-random-bert"}}]
    ladder = prepare(load_ladder(_ladder(tmp_path, _rows(24), rungs=rungs, max_length=128)))
    method = build_method(ladder.spec.rung("few_shot_prompt"), ladder.ctx)
    method.setup_formatting()
    method.fit(ladder.data, tmp_path / "work")
    assert len(method.pool) == len(ladder.data.train) and method.embeddings.shape[0] == len(ladder.data.train)
    train = ladder.data.train
    demos = method.demos_for(train.inputs[:3], None)
    for x, ref, shots in zip(train.inputs[:3], train.references[:3], demos):
        assert len(shots) == 2 and (shots[0].input, shots[0].answer) == (x, ref)  # itself: cosine 1
