"""Metrics against hand-computed values."""

from __future__ import annotations

import json
import math

import pytest

from adaptlab.errors import DataError, UserError
from adaptlab.evaluation.metrics import (
    METRICS,
    bleu,
    chrf,
    classification_metrics,
    exact_match,
    higher_is_better,
    metric_info,
    perplexity_from_nll,
    rouge_per_example,
    rouge_scores,
    split_sentences,
)


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


# ---------------------------------------------------------------------------------------------------- registry


def test_every_metric_name_is_registered_with_direction():
    expected = {
        "accuracy", "macro_precision", "macro_recall", "macro_f1", "rouge1", "rouge2", "rougeL", "rougeLsum",
        "bleu", "chrf", "exact_match", "perplexity", "spearman", "recall_at_k", "mrr", "entity_micro_f1",
        "entity_micro_precision", "entity_micro_recall", "entity_macro_f1", "token_accuracy", "unparsed_share",
        # sentence embeddings (ranking metrics at each cutoff), preference pairs, judges of generative rungs
        "pearson", "average_precision", "roc_auc", "best_accuracy", "triplet_accuracy",
        *(f"{m}_at_{k}" for m in ("recall", "mrr", "ndcg") for k in (1, 3, 5, 10, 20, 50, 100)),
        "preference_accuracy", "mean_margin", "reward_mean", "reward_win_rate", "judge_win_rate",
        "judge_order_agreement", "mmlu_accuracy",
    }  # fmt: skip
    assert set(METRICS.names()) == expected
    assert higher_is_better("macro_f1") and higher_is_better("bleu") and higher_is_better("ndcg_at_10")
    assert higher_is_better("mmlu_accuracy") and higher_is_better("triplet_accuracy")
    assert not higher_is_better("perplexity")
    assert metric_info("rougeL").name == "rougeL"


def test_unknown_metric_suggests_the_close_name():
    with pytest.raises(UserError, match="Did you mean 'macro_f1'"):
        higher_is_better("macro-f1")


# ---------------------------------------------------------------------------------------------- classification


def test_macro_f1_counts_a_never_predicted_class():
    # label c (index 2) is never predicted: P = R = F1 = 0 for it, and it still weighs 1/3 in the macro mean.
    refs = [0, 0, 1, 1, 2, 2]
    preds = [0, 0, 1, 1, 1, 0]
    out = classification_metrics(refs, preds, ["a", "b", "c"])
    # a: predicted at rows 0,1,5 (2 right) -> P 2/3, R 2/2; b likewise; c: 0.
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["macro_precision"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert out["macro_recall"] == pytest.approx((1 + 1 + 0) / 3)
    assert out["macro_f1"] == pytest.approx((f1(2 / 3, 1) * 2 + 0) / 3)  # 0.5333, not 0.8
    assert out["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert out["per_class"]["a"]["support"] == 2
    json.dumps(out)  # plain Python types only


def test_label_absent_from_split_still_counts_in_macro_average():
    out = classification_metrics([0, 1], [0, 1], ["a", "b", "unused"])
    assert out["accuracy"] == 1.0
    assert out["macro_f1"] == pytest.approx(2 / 3)


def test_confusion_matrix_rows_are_references_columns_are_predictions():
    out = classification_metrics([0, 0, 0, 1], [1, 1, 0, 1], ["neg", "pos"])
    # reference neg predicted pos twice -> row 0, column 1.
    assert out["confusion_matrix"] == [[1, 2], [0, 1]]


def test_classification_input_errors_name_the_row():
    with pytest.raises(DataError, match="row 1"):
        classification_metrics([0, 3], [0, 1], ["a", "b"])
    with pytest.raises(DataError, match="3 predictions but 2 references"):
        classification_metrics([0, 1], [0, 1, 1], ["a", "b"])
    with pytest.raises(DataError, match="empty"):
        classification_metrics([], [], ["a", "b"])


# -------------------------------------------------------------------------------------------------------- BLEU


def test_bleu_clips_repeated_unigrams():
    # hyp "the the the the" (c = 4) vs ref "the cat is on the mat" (r = 6). "the" occurs twice in the reference,
    # so clipped unigram precision is 2/4. No higher-order n-gram matches; sacrebleu's default "exp" smoothing
    # replaces the k-th zero precision by 1 / (2^k * total): p2 = 1/(2*3), p3 = 1/(4*2), p4 = 1/(8*1).
    precisions = [2 / 4, 1 / (2 * 3), 1 / (4 * 2), 1 / (8 * 1)]
    bp = math.exp(1 - 6 / 4)
    expected = 100 * bp * math.exp(sum(math.log(p) for p in precisions) / 4)
    assert bleu(["the the the the"], ["the cat is on the mat"]) == pytest.approx(expected, abs=1e-6)  # 11.52


def test_bleu_brevity_penalty_for_short_hypothesis():
    # every n-gram of the 5-token hypothesis is in the 7-token reference: all precisions 1, BLEU = 100 * BP.
    score = bleu(["the cat sat on the"], ["the cat sat on the mat today"])
    assert score == pytest.approx(100 * math.exp(1 - 7 / 5), abs=1e-6)  # 67.03
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)


def test_chrf_extremes():
    assert chrf(["abc def"], ["abc def"]) == pytest.approx(100.0)
    assert chrf(["xyz"], ["abc"]) == pytest.approx(0.0)
    assert 0 < chrf(["the cat sat"], ["the cat sat on the mat"]) < 100


# ------------------------------------------------------------------------------------------------------- ROUGE


def test_rouge1_and_rouge2_simple_overlap():
    # pred "the cat sat" (3 tokens, 2 bigrams), all inside ref "the cat sat on the mat" (6 tokens, 5 bigrams).
    out = rouge_scores(["the cat sat"], ["the cat sat on the mat"])
    assert out["rouge1"] == pytest.approx(f1(1, 3 / 6))  # 2/3
    assert out["rouge2"] == pytest.approx(f1(1, 2 / 5))  # 4/7


def test_rougeL_uses_longest_common_subsequence_not_bag_of_words():
    # pred "mat the on cat" vs ref "the cat sat on the mat": every pred unigram matches (ROUGE-1 P 1, R 4/6),
    # but order breaks it: LCS = 2 ("the on" / "the cat"), so P 2/4 and R 2/6. No bigram is shared.
    out = rouge_scores(["mat the on cat"], ["the cat sat on the mat"])
    assert out["rouge1"] == pytest.approx(f1(1, 4 / 6))  # 0.8
    assert out["rougeL"] == pytest.approx(f1(2 / 4, 2 / 6))  # 0.4
    assert out["rouge2"] == 0.0


def test_rougeLsum_splits_sentences_when_there_are_no_newlines():
    # Sentences swapped: whole-text LCS is 3 of 6 tokens (rougeL 0.5), but each reference sentence matches a
    # predicted sentence fully, so summary-level rougeLsum is 1.
    out = rouge_scores(["the cat sat. the dog ran."], ["the dog ran. the cat sat."])
    assert out["rougeL"] == pytest.approx(0.5)
    assert out["rougeLsum"] == pytest.approx(1.0)


def test_rouge_uses_stemming_and_averages_per_example():
    per = rouge_per_example(["dogs running", "completely different"], ["dog runs", "dog runs"])
    assert per["rouge1"] == [pytest.approx(1.0), 0.0]
    assert rouge_scores(["dogs running", "completely different"], ["dog runs", "dog runs"])["rouge1"] == 0.5


def test_split_sentences():
    assert split_sentences("One. Two! Three? four") == "One.\nTwo!\nThree?\nfour"
    assert split_sentences("already\nsplit. here") == "already\nsplit. here"


# ------------------------------------------------------------------------------------------ exact match, ppl


def test_exact_match_normalises_case_and_whitespace():
    assert exact_match(["  The   Cat ", "dog"], ["the cat", "cat"]) == 0.5
    assert exact_match(["  The   Cat ", "dog"], ["the cat", "cat"], normalize=False) == 0.0


def test_perplexity_from_nll():
    assert perplexity_from_nll(10 * math.log(4), 10) == pytest.approx(4.0)
    assert perplexity_from_nll(1e6, 1) == math.inf
    with pytest.raises(DataError, match="0 tokens"):
        perplexity_from_nll(1.0, 0)
