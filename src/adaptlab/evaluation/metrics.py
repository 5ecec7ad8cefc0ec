"""Metrics for classification and generation, plus a registry of what each metric name means.

Every function returns plain Python floats/ints/lists so results can be written to JSON as they are.
Generation metrics call the libraries directly (``rouge_score``, ``sacrebleu``) rather than ``evaluate.load``,
which would need the Hugging Face hub. Heavy imports (scikit-learn, rouge_score, sacrebleu) stay inside the
functions so importing this module (e.g. for :func:`higher_is_better`) is cheap.

Scales: accuracy, precision/recall/F1, ROUGE and exact match are fractions in [0, 1]; BLEU and chrF are on
sacrebleu's 0-100 scale; perplexity is >= 1 and lower is better.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from adaptlab.errors import DataError
from adaptlab.registry import Registry

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@dataclass(frozen=True)
class MetricInfo:
    """What a metric name means: its direction and a one-line description."""

    name: str
    higher_is_better: bool
    description: str


METRICS: Registry[MetricInfo] = Registry("metric")


def _info(name: str, description: str, higher_is_better: bool = True) -> None:
    METRICS.register(name)(MetricInfo(name, higher_is_better, description))


_info("accuracy", "Fraction of examples whose predicted label equals the reference (0-1).")
_info("macro_precision", "Unweighted mean of per-class precision over all labels (0-1).")
_info("macro_recall", "Unweighted mean of per-class recall over all labels (0-1).")
_info("macro_f1", "Unweighted mean of per-class F1 over all labels, never-predicted classes included (0-1).")
_info("rouge1", "ROUGE-1 F-measure: unigram overlap with Porter stemming, mean over examples (0-1).")
_info("rouge2", "ROUGE-2 F-measure: bigram overlap with Porter stemming, mean over examples (0-1).")
_info("rougeL", "ROUGE-L F-measure: longest common subsequence over the whole text, mean over examples (0-1).")
_info("rougeLsum", "ROUGE-Lsum F-measure: summary-level LCS over newline-split sentences (0-1).")
_info("bleu", "Corpus BLEU from sacrebleu (13a tokenisation, exp smoothing), 0-100.")
_info("chrf", "Corpus chrF from sacrebleu (character n-gram F-score), 0-100.")
_info("exact_match", "Fraction of predictions equal to the reference after strip/casefold/whitespace collapse.")
_info("perplexity", "exp(total token negative log-likelihood / number of tokens).", higher_is_better=False)
_info("spearman", "Spearman rank correlation between predicted and reference scores (-1 to 1).")
_info("recall_at_k", "Fraction of queries whose relevant item is in the top k retrieved (0-1).")
_info("mrr", "Mean reciprocal rank of the first relevant item (0-1).")
_info("entity_micro_f1", "Entity-level micro F1 (type and exact word span must match), as seqeval computes it (0-1).")
_info("entity_micro_precision", "Share of predicted entities that match a gold entity exactly (seqeval, 0-1).")
_info("entity_micro_recall", "Share of gold entities found with the exact span and type (seqeval, 0-1).")
_info("entity_macro_f1", "Mean over entity types of the per-type entity F1 (0-1).")
_info("token_accuracy", "Fraction of words whose predicted BIO tag equals the gold tag (0-1; O dominates it).")
_info("unparsed_share", "Share of examples whose generated answer could not be read (0-1).", higher_is_better=False)
_info("pearson", "Pearson correlation between predicted and reference scores (-1 to 1).")
_info("average_precision", "Average precision of a score ranking the positive examples first (0-1; scikit-learn).")
_info("roc_auc", "Area under the ROC curve of a score separating positive from negative examples (0-1).")
_info("best_accuracy", "Accuracy at the score threshold that is best on the evaluated examples themselves (0-1; "
      "optimistic: the threshold is chosen on them).")
_info("triplet_accuracy", "Share of (anchor, positive, negative) triplets whose anchor is closer to the positive "
      "(0-1).")
_info("preference_accuracy", "Share of preference pairs whose chosen response the rung scores above the rejected "
      "one; a tie is wrong (0-1).")
_info("mean_margin", "Mean of score(chosen) - score(rejected) over preference pairs, on the rung's own scale.")
_info("reward_mean", "Mean reward a finished reward-model run (or a classifier's target-label probability) gives "
      "the rung's test outputs (task.judges.reward), on that run's scale.")
_info("reward_win_rate", "Share of test inputs whose output the reward run scores above the judges' `against` "
      "rung's output; a tie counts half (0-1, 0.5: no better).")
_info("judge_win_rate", "LLM judge: the rung's mean score against the `against` rung's output, judged in both orders "
      "(win 1, tie 0.5, loss 0; 0-1, 0.5: no better).")
_info("judge_order_agreement", "LLM judge: share of judged pairs whose verdicts agree when the two responses swap "
      "places (0-1; low: the judge follows position, not content).")
_info("mmlu_accuracy", "Share of sampled MMLU questions answered right (lm-eval, 0-shot log-likelihood of A-D; "
      "chance 0.25): a forgetting check next to the Hamlet perplexity.")

#: Cutoffs k of the ranking metrics recall_at_k, mrr_at_k and ndcg_at_k (sentence-embedding retrieval).
RANK_CUTOFFS = (1, 3, 5, 10, 20, 50, 100)
for _k in RANK_CUTOFFS:
    _info(f"recall_at_{_k}", f"Share of a query's relevant documents among the {_k} ranked first, mean over queries "
          "(0-1).")
    _info(f"mrr_at_{_k}", f"Mean reciprocal rank of a query's first relevant document, 0 when it is below rank {_k} "
          "(0-1).")
    _info(f"ndcg_at_{_k}", f"Normalised discounted cumulative gain of the {_k} documents ranked first, binary "
          "relevance, mean over queries (0-1).")


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` for ``name``; unknown names raise UserError with a did-you-mean hint."""
    return METRICS.get(name)


def higher_is_better(name: str) -> bool:
    """Whether larger values of metric ``name`` are better (False only for losses such as perplexity)."""
    return metric_info(name).higher_is_better


# ---------------------------------------------------------------------------------------------- classification


def classification_metrics(references: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-class scores and the confusion matrix.

    ``references`` and ``predictions`` are label indices into ``label_names``. Macro averages run over *all*
    labels in ``label_names`` (scikit-learn, ``zero_division=0``), so a class that is never predicted, or absent
    from the references, contributes 0 rather than being skipped. ``confusion_matrix[i][j]`` counts examples
    whose reference is label ``i`` and prediction is label ``j``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    refs, preds = _check_labels(references, predictions, len(label_names))
    labels = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        refs, preds, labels=labels, average=None, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(label_names)
    }
    return {
        "accuracy": float(accuracy_score(refs, preds)),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(refs, preds, labels=labels).tolist(),
    }


def _check_labels(references: Sequence[int], predictions: Sequence[int], num_labels: int) -> tuple[list, list]:
    refs = [int(r) for r in references]
    preds = [int(p) for p in predictions]
    _check_pair(refs, preds)
    for kind, values in (("reference", refs), ("prediction", preds)):
        bad = [(i, v) for i, v in enumerate(values) if not 0 <= v < num_labels]
        if bad:
            i, v = bad[0]
            raise DataError(
                f"{kind} label index {v} at row {i} is outside 0..{num_labels - 1}; "
                f"every label must be one of the {num_labels} label names."
            )
    return refs, preds


def _check_pair(references: Sequence, predictions: Sequence) -> None:
    if len(references) != len(predictions):
        raise DataError(
            f"{len(predictions)} predictions but {len(references)} references; they must pair up one to one."
        )
    if len(references) == 0:
        raise DataError("no examples to evaluate: the evaluation split is empty.")


# -------------------------------------------------------------------------------------------------- generation

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> str:
    """Text with one sentence per line, as ROUGE-Lsum expects.

    Text that already contains newlines is taken as split; otherwise it is split after ``.``, ``!`` or ``?``
    followed by whitespace.
    """
    text = text.strip()
    if "\n" in text:
        return text
    return "\n".join(s for s in _SENTENCE_END.split(text) if s)


def rouge_per_example(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-example ROUGE F-measures (Porter stemming), keyed by ROUGE type; for bootstrapping."""
    from rouge_score import rouge_scorer

    _check_pair(references, predictions)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for pred, ref in zip(predictions, references, strict=True):
        # rouge_score's argument order is (target, prediction).
        scores = scorer.score(ref, pred)
        lsum = scorer.score(split_sentences(ref), split_sentences(pred))["rougeLsum"]
        for t in ROUGE_TYPES:
            out[t].append(float((lsum if t == "rougeLsum" else scores[t]).fmeasure))
    return out


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """rouge1/rouge2/rougeL/rougeLsum F-measures averaged over examples (0-1)."""
    per_example = rouge_per_example(predictions, references)
    return {t: sum(v) / len(v) for t, v in per_example.items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus-level BLEU (sacrebleu defaults: 13a tokenisation, exp smoothing, 0-100), one reference each."""
    import sacrebleu

    _check_pair(references, predictions)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus-level chrF (sacrebleu defaults, 0-100), one reference each."""
    import sacrebleu

    _check_pair(references, predictions)
    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def normalize_answer(text: str) -> str:
    """Strip, casefold and collapse runs of whitespace to one space."""
    return " ".join(text.split()).casefold()


def exact_match(predictions: Sequence[str], references: Sequence[str], normalize: bool = True) -> float:
    """Fraction of predictions equal to their reference (0-1), compared after :func:`normalize_answer`."""
    _check_pair(references, predictions)
    norm = normalize_answer if normalize else (lambda s: s)
    return sum(norm(p) == norm(r) for p, r in zip(predictions, references, strict=True)) / len(references)


def perplexity_from_nll(total_nll: float, total_tokens: int) -> float:
    """exp(total_nll / total_tokens): perplexity from the summed token negative log-likelihood (nats)."""
    if total_tokens <= 0:
        raise DataError("cannot compute perplexity over 0 tokens: the evaluation split has no target tokens.")
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf
