"""Is a rung's result a real one? Flags rungs that learned nothing, so a report never reads "fine-tuning loses to
a logistic regression" when fine-tuning was simply never trained enough to learn.

A classification rung is *degenerate* when

- its test predictions are (nearly) all one class -- at least :data:`ONE_CLASS_SHARE` of them -- while that class
  is a smaller share of the references, or
- it trained, and its training loss never went clearly below (:data:`LOSS_MARGIN`) the loss of a model that
  ignores the text and always predicts the label prior: the entropy of the training labels (``log k`` when the
  loss is class-balanced, since the balanced loss of any constant prediction is at least that).

A rung that never predicts some class of the test set is not degenerate, but is *doubted*: the finding is
recorded and the recommendation mentions it. Pure functions of predictions and the training history.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

ONE_CLASS_SHARE = 0.95
LOSS_MARGIN = 0.97

TRAINED_ADVICE = (
    "It was not trained enough to learn: train longer (params.epochs, or a higher params.min_steps), try another "
    "learning_rate, keep class_weight: balanced; on small data compare with linear_probe."
)
UNTRAINED_ADVICE = (
    "The rung has no training to fix this: its prompts or label descriptions don't separate the classes; reword "
    "task.label_descriptions (or the template), or use a trained rung."
)


def prior_loss(train_counts: Sequence[int], class_weighted: bool) -> float:
    """The training loss of always predicting the label prior (nats)."""
    counts = [c for c in train_counts if c > 0]
    if class_weighted:
        return math.log(len(counts)) if counts else 0.0
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts) if total else 0.0


def diagnose_classification(
    predictions: Sequence[str | None],
    references: Sequence[str],
    *,
    train_counts: Sequence[int],
    losses: Sequence[float],
    class_weighted: bool,
) -> dict:
    """{"degenerate": bool, "doubted": bool, "findings": [...], "advice": str} for one rung's test predictions."""
    findings: list[str] = []
    degenerate = False
    n = len(predictions)
    counts = Counter(p for p in predictions if p is not None)
    refs = Counter(references)
    if n and counts:
        top, top_n = counts.most_common(1)[0]
        share, ref_share = top_n / n, refs.get(top, 0) / max(1, len(references))
        if share >= ONE_CLASS_SHARE and ref_share < ONE_CLASS_SHARE:
            degenerate = True
            findings.append(f"predicts '{top}' for {share:.0%} of the test examples (it is {ref_share:.0%} of them)")
    finite = [x for x in losses if isinstance(x, (int, float)) and math.isfinite(x)]
    if finite:
        floor = prior_loss(train_counts, class_weighted)
        if floor > 0 and min(finite) >= LOSS_MARGIN * floor:
            degenerate = True
            findings.append(f"its training loss never went below {min(finite):.3f}, while always predicting the "
                            f"label prior scores {floor:.3f}: it learned nothing from the texts")
    never = sorted(label for label in refs if counts.get(label, 0) == 0)
    if never and not degenerate:
        findings.append(f"never predicts {', '.join(repr(x) for x in never)} "
                        f"({sum(refs[x] for x in never)} test examples)")
    advice = (TRAINED_ADVICE if finite else UNTRAINED_ADVICE) if findings else ""
    return {"degenerate": degenerate, "doubted": bool(findings), "findings": findings, "advice": advice}


def summary(diagnosis: dict | None) -> str:
    """One line for tables and recommendations: the findings and, for a degenerate rung, what to try."""
    if not diagnosis or not diagnosis.get("findings"):
        return ""
    text = "; ".join(diagnosis["findings"])
    return f"{text}. {diagnosis['advice']}" if diagnosis.get("advice") else text
