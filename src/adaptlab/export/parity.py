"""Parity: does a shipped artefact predict what the trained run predicted on its test split?

The reference is the run itself: its recorded test predictions (``predictions.jsonl``: texts, probabilities and
predicted labels, written when the rung was evaluated) and, for logits, the rung's weights reloaded by its own
method class. For every artefact we report the largest absolute logit and probability difference, how many
predicted labels changed, and the change in the primary metric; past a :class:`Tolerance` the export fails.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from adaptlab.errors import UserError


class ParityError(UserError):
    """An exported artefact differs from the trained run by more than the tolerance.

    Not a mistake in the input, so the CLI exits with 1 (not 2) and prints the message: which artefact, which
    measure, and by how much it missed.
    """

    exit_code = 1

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Tolerance:
    """How far an artefact may drift from the trained run before the export fails.

    ``logit``: max |Δlogit| against the run's weights reloaded (None: reported, not checked).
    ``prob``: max |Δprobability| against the run's recorded test predictions.
    ``metric``: max |Δ primary metric| (e.g. macro-F1) on the same test examples.
    """

    logit: float | None
    prob: float
    metric: float


#: Defaults for float32 artefacts (the weights reloaded, the merged model, ONNX): float rounding only.
FP32_TOLERANCE = Tolerance(logit=1e-3, prob=1e-3, metric=0.002)
#: Defaults for int8: dynamic quantisation moves every logit a little, so it is judged by probabilities and the
#: metric. Measured on the Rotten Tomatoes LoRA (MiniLM, 2,562 test reviews): max |Δprob| 0.207, macro-F1 +0.0006.
INT8_TOLERANCE = Tolerance(logit=None, prob=0.25, metric=0.01)
#: Defaults for the merged and ONNX exports of a 4-bit rung (qlora): the rung multiplies by its dequantised weights
#: in bf16, the export (its adapter merged into those weights) in the base's dtype, so every logit rounds a little
#: differently; judged by probabilities, the metric and (for generation) the decoded text. Measured on tiny random
#: Llama: max |Δlogit| 0.0035 of logits up to 0.9.
QUANTIZED_TOLERANCE = Tolerance(logit=None, prob=0.02, metric=0.01)


def export_tolerance(method: Any, tolerance: Tolerance) -> Tolerance:
    """The tolerance for exports of a rung: the default fp32 one becomes :data:`QUANTIZED_TOLERANCE` for a rung
    over a 4-bit base (a tolerance given on the command line stays as given)."""
    from adaptlab.export.merge import quantized

    return QUANTIZED_TOLERANCE if tolerance == FP32_TOLERANCE and quantized(method) else tolerance


@dataclass
class ParityReference:
    """The run's test examples and what the trained rung predicted for them."""

    ids: list[str]
    texts: list[str]
    pairs: list[str] | None
    references: list[str]
    predictions: list[str]
    probs: np.ndarray
    labels: list[str]
    primary_metric: str
    logits: np.ndarray | None = None

    @classmethod
    def from_records(cls, records: list[dict], labels: list[str], primary_metric: str,
                     limit: int | None = None) -> ParityReference:
        if limit is not None:
            records = records[:limit]
        if not records:
            raise UserError("the run's predictions.jsonl has no test predictions to check parity against.")
        missing = [k for k in ("text", "scores", "prediction", "reference") if k not in records[0]]
        if missing:
            raise UserError(f"predictions.jsonl rows lack {missing}: this run's task has no parity check yet.")
        return cls(
            ids=[str(r.get("id", i)) for i, r in enumerate(records)],
            texts=[r["text"] for r in records],
            pairs=[r["text_pair"] for r in records] if "text_pair" in records[0] else None,
            references=[r["reference"] for r in records],
            predictions=[r["prediction"] for r in records],
            probs=np.array([[r["scores"][n] for n in labels] for r in records], dtype=np.float64),
            labels=list(labels),
            primary_metric=primary_metric,
        )

    def __len__(self) -> int:
        return len(self.texts)

    def metric(self, predicted: list[str]) -> float:
        from adaptlab.evaluation.metrics import classification_metrics

        index = {n: i for i, n in enumerate(self.labels)}
        refs = [index[r] for r in self.references]
        preds = [index[p] for p in predicted]
        return float(classification_metrics(refs, preds, self.labels)[self.primary_metric])


def check(reference: ParityReference, artifact: str, predictor: Any, tolerance: Tolerance,
          file: str) -> tuple[dict, np.ndarray | None]:
    """Run ``predictor`` on the reference examples and compare.

    Returns the JSON-ready result (with ``passed`` and, per missed tolerance, a ``failures`` line saying by how
    much) and the predictor's logits (None if it has none), which the first check makes the logit reference.
    """
    start = time.perf_counter()
    logits = predictor.predict_logits(reference.texts, reference.pairs)
    probs = predictor.predict_proba(reference.texts, reference.pairs) if logits is None else _softmax(logits)
    seconds = time.perf_counter() - start
    predicted = [reference.labels[i] for i in np.argmax(probs, axis=1)]
    logit_diff = None
    if logits is not None and reference.logits is not None:
        logit_diff = float(np.max(np.abs(logits.astype(np.float64) - reference.logits)))
    prob_diff = float(np.max(np.abs(probs.astype(np.float64) - reference.probs)))
    run_value = reference.metric(reference.predictions)
    value = reference.metric(predicted)
    failures = []
    if tolerance.logit is not None and logit_diff is not None and logit_diff > tolerance.logit:
        failures.append(over_tolerance("max |Δlogit|", logit_diff, tolerance.logit))
    if prob_diff > tolerance.prob:
        failures.append(over_tolerance("max |Δprob|", prob_diff, tolerance.prob))
    if abs(value - run_value) > tolerance.metric:
        failures.append(over_tolerance(f"|Δ{reference.primary_metric}|", abs(value - run_value), tolerance.metric))
    return {
        "artifact": artifact,
        "file": file,
        "examples": len(reference),
        "max_abs_logit_diff": logit_diff,
        "max_abs_prob_diff": prob_diff,
        "changed_predictions": int(sum(a != b for a, b in zip(predicted, reference.predictions))),
        "metric": reference.primary_metric,
        "run_value": run_value,
        "value": value,
        "metric_delta": value - run_value,
        "tolerance": asdict(tolerance),
        "passed": not failures,
        "failures": failures,
        "seconds": round(seconds, 3),
    }, logits


def over_tolerance(what: str, value: float, limit: float) -> str:
    return f"{what} = {value:.3g} > tolerance {limit:.3g} (over by {value - limit:.3g})"


def _softmax(logits: np.ndarray) -> np.ndarray:
    from adaptlab.bundle import softmax

    return softmax(logits)


def failure_message(report: dict) -> str:
    """One line per failing artefact, saying by how much it missed."""
    lines = [f"{c['artifact']} ({c['file']}): " + "; ".join(c["failures"])
             for c in report["checks"] if not c["passed"]]
    return "parity check failed against the trained run's test split:\n  " + "\n  ".join(lines)
