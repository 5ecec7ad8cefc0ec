"""Parity arithmetic with known values: differences, changed predictions, metric delta, and the failure message."""

from __future__ import annotations

import numpy as np
import pytest

from adaptlab.errors import UserError
from adaptlab.export.parity import FP32_TOLERANCE, ParityReference, Tolerance, check, failure_message

LABELS = ["neg", "pos"]


def records() -> list[dict]:
    """Four test rows: the run predicted neg, pos, pos, neg; the references are neg, pos, neg, neg."""
    probs = [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]]
    refs = ["neg", "pos", "neg", "neg"]
    return [{"id": str(i), "text": f"t{i}", "reference": r, "prediction": LABELS[int(np.argmax(p))],
             "scores": dict(zip(LABELS, p))} for i, (p, r) in enumerate(zip(probs, refs))]


class Fixed:
    """A predictor that returns given logits."""

    def __init__(self, logits):
        self.logits = np.asarray(logits, dtype=np.float32)

    def predict_logits(self, texts, pairs=None):
        assert list(texts) == ["t0", "t1", "t2", "t3"]
        return self.logits


def logits_of(probs) -> np.ndarray:
    return np.log(np.asarray(probs))


def test_identical_artefact_passes_with_zero_differences():
    ref = ParityReference.from_records(records(), LABELS, "accuracy")
    ref.logits = logits_of(ref.probs)
    result, logits = check(ref, "onnx", Fixed(ref.logits), FP32_TOLERANCE, "onnx/model.onnx")
    assert result["passed"] and result["failures"] == []
    assert result["max_abs_logit_diff"] < 1e-6 and result["max_abs_prob_diff"] < 1e-6
    assert result["changed_predictions"] == 0
    assert result["run_value"] == pytest.approx(0.75) and result["metric_delta"] == pytest.approx(0.0)
    assert logits.shape == (4, 2)


def test_a_flipped_prediction_fails_and_says_by_how_much():
    ref = ParityReference.from_records(records(), LABELS, "accuracy")
    ref.logits = logits_of(ref.probs)
    drifted = ref.probs.copy()
    drifted[2] = [0.55, 0.45]  # row 2 flips from pos to neg: now correct, accuracy 0.75 -> 1.0
    result, _ = check(ref, "int8", Fixed(logits_of(drifted)), Tolerance(logit=None, prob=0.1, metric=0.02),
                      "onnx/model.int8.onnx")
    assert not result["passed"]
    assert result["changed_predictions"] == 1
    assert result["max_abs_prob_diff"] == pytest.approx(0.15, abs=1e-6)
    assert result["metric_delta"] == pytest.approx(0.25)
    assert result["failures"] == [
        "max |Δprob| = 0.15 > tolerance 0.1 (over by 0.05)",
        "|Δaccuracy| = 0.25 > tolerance 0.02 (over by 0.23)",
    ]
    message = failure_message({"checks": [result]})
    assert "int8 (onnx/model.int8.onnx): max |Δprob| = 0.15" in message


def test_logit_tolerance_only_when_both_sides_have_logits():
    ref = ParityReference.from_records(records(), LABELS, "macro_f1")
    shifted = logits_of(ref.probs) + 0.5  # same probabilities, logits moved by 0.5
    result, _ = check(ref, "merged", Fixed(shifted), FP32_TOLERANCE, "merged/")
    assert result["passed"] and result["max_abs_logit_diff"] is None
    ref.logits = logits_of(ref.probs)
    result, _ = check(ref, "merged", Fixed(shifted), FP32_TOLERANCE, "merged/")
    assert not result["passed"] and result["max_abs_logit_diff"] == pytest.approx(0.5, abs=1e-6)


def test_limit_and_unsupported_records():
    assert len(ParityReference.from_records(records(), LABELS, "accuracy", limit=2)) == 2
    with pytest.raises(UserError, match="no test predictions"):
        ParityReference.from_records([], LABELS, "accuracy")
    with pytest.raises(UserError, match="no parity check"):
        ParityReference.from_records([{"id": "1", "prompt": "x", "completion": "y"}], LABELS, "accuracy")
