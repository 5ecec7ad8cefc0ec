"""Shipping a token classifier: per-word logits from any backend, a predictor that returns entities with character
offsets, and the export's parity check on per-word logits against the trained run.

Backends share one path: the words go through the tokenizer (``is_split_into_words``), the backend gives logits per
sub-token, and the first sub-token of each word stands for the word (as in training). Only the backend call differs:
the trained rung's model or a merged transformers model (torch), or an ONNX file (onnxruntime).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.distributed import predicting
from adaptlab.tasks.token_classification.data import words_of
from adaptlab.tasks.token_classification.output import entities_of

BATCH_SIZE = 32
Backend = Callable[[dict[str, np.ndarray]], np.ndarray]


def torch_backend(model: Any, device: str = "cpu") -> Backend:
    import torch

    @predicting
    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
        return model(**tensors).logits.float().cpu().numpy()

    return run


def onnx_backend(file: Path) -> Backend:
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda batch: session.run(["logits"], {k: batch[k].astype(np.int64) for k in names})[0]


def word_logits(run: Backend, tokenizer: Any, sentences: Sequence[list[str]], max_length: int,
                batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
    """(words, labels) logits per sentence; words past ``max_length`` get a row of NaN (predicted O)."""
    enc = tokenizer(list(sentences), is_split_into_words=True, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    out: list[np.ndarray] = [np.zeros(0)] * len(sentences)
    order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenizer.pad({k: [enc[k][i] for i in idx] for k in keys}, return_tensors="np")
        logits = run({k: np.asarray(v, dtype=np.int64) for k, v in batch.items()})
        for row, i in enumerate(idx):
            rows = np.full((len(sentences[i]), logits.shape[-1]), np.nan, dtype=np.float64)
            seen: set[int] = set()
            for position, w in enumerate(enc.word_ids(int(i))):
                if w is not None and w not in seen:
                    seen.add(w)
                    rows[w] = logits[row, position]
            out[i] = rows
    return out


def tags_of(logits: np.ndarray, labels: list[str]) -> list[str]:
    return [labels[int(np.argmax(row))] if np.isfinite(row).all() else "O" for row in logits]


class TokenPredictor:
    """``predict(texts)`` -> entities with character offsets for each text; ``predict_tags(sentences)`` on words."""

    def __init__(self, run: Backend, tokenizer: Any, labels: list[str], max_length: int, backend: str = "?"):
        self.run, self.tokenizer, self.labels = run, tokenizer, labels
        self.max_length, self.backend = max_length, backend

    def word_logits(self, sentences: Sequence[list[str]]) -> list[np.ndarray]:
        return word_logits(self.run, self.tokenizer, sentences, self.max_length)

    def predict_tags(self, sentences: Sequence[list[str]]) -> list[list[str]]:
        return [tags_of(rows, self.labels) for rows in self.word_logits(sentences)]

    def predict(self, texts: str | Sequence[str]) -> list[dict[str, Any]]:
        """For each text: {"entities": [{start, end, label, text, score}]}; score is the mean probability of the
        entity's word tags."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        split = [words_of(t) for t in texts]
        sentences = [w for w, _ in split]
        logits = self.word_logits([s for s in sentences if s]) if any(sentences) else []
        out, k = [], 0
        for text, (words, offsets) in zip(texts, split):
            if not words:
                out.append({"entities": []})
                continue
            rows = logits[k]
            k += 1
            tags = tags_of(rows, self.labels)
            probs = _softmax(np.nan_to_num(rows))
            found = entities_of(tags, text, offsets)
            for entity in found:
                covered = [w for w, (a, b) in enumerate(offsets) if a >= entity["start"] and b <= entity["end"]]
                entity["score"] = round(float(np.mean([probs[w].max() for w in covered])), 6)
            out.append({"entities": found})
        return out

    def __repr__(self) -> str:
        return f"TokenPredictor(backend={self.backend!r}, types={sorted({n[2:] for n in self.labels if n != 'O'})})"


class MethodTagger:
    """Entities for raw texts from any token-classification rung (``predict_tags`` on its words): what
    ``adaptlab predict`` and ``adaptlab.load`` give for a run folder. Rungs without logits give no scores."""

    backend = "weights"

    def __init__(self, method: Any):
        self.method = method

    def predict(self, texts: str | Sequence[str]) -> list[dict[str, Any]]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        split = [words_of(t) for t in texts]
        kept = [words for words, _ in split if words]
        tags = iter(self.method.predict_tags(kept).tags if kept else [])
        return [{"entities": entities_of(next(tags), text, offsets) if words else []}
                for text, (words, offsets) in zip(texts, split)]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def parity_check(records: list[dict], artifact: str, predictor: TokenPredictor, reference: list[np.ndarray] | None,
                 tolerance: Any, file: str, types: list[str]) -> tuple[dict, list[np.ndarray]]:
    """Per-word logits of ``predictor`` against the reference logits; its tags and entity F1 against the run's
    recorded test predictions."""
    import time

    start = time.perf_counter()
    sentences = [r["tokens"] for r in records]
    logits = predictor.word_logits(sentences)
    tags = [tags_of(rows, predictor.labels) for rows in logits]
    diff = None
    if reference is not None:
        diff = float(max((np.nanmax(np.abs(a - b)) if a.size else 0.0) for a, b in zip(logits, reference)))
    return _tag_parity(records, tags, diff, tolerance, artifact, file, types, start), logits


def method_parity(records: list[dict], method: Any, tolerance: Any, file: str, types: list[str]) -> dict:
    """The reloaded rung's own tags (``predict_tags``: a rung without a transformers token head, e.g. linear_probe
    or spaCy, has no per-word logits to compare) against the run's recorded test predictions."""
    import time

    start = time.perf_counter()
    tags = method.predict_tags([r["tokens"] for r in records]).tags if records else []
    return _tag_parity(records, tags, None, tolerance, "weights", file, types, start)


def _tag_parity(records: list[dict], tags: list[list[str]], diff: float | None, tolerance: Any, artifact: str,
                file: str, types: list[str], start: float) -> dict:
    import time

    from adaptlab.tasks.token_classification.metrics import entity_metrics

    refs = [r["reference"] for r in records]
    run_value = entity_metrics(refs, [r["prediction"] for r in records], types, 0)["metrics"]["entity_micro_f1"]
    value = entity_metrics(refs, tags, types, 0)["metrics"]["entity_micro_f1"]
    changed = sum(a != b for r, t in zip(records, tags) for a, b in zip(r["prediction"], t))
    failures = []
    if tolerance.logit is not None and diff is not None and diff > tolerance.logit:
        failures.append(f"max |Δlogit| = {diff:.3g} > tolerance {tolerance.logit:.3g}")
    if abs(value - run_value) > tolerance.metric:
        failures.append(f"|Δentity_micro_f1| = {abs(value - run_value):.3g} > tolerance {tolerance.metric:.3g}")
    return {"artifact": artifact, "file": file, "examples": len(records), "max_abs_logit_diff": diff,
            "max_abs_prob_diff": None, "changed_predictions": int(changed), "changed_unit": "word tags",
            "metric": "entity_micro_f1",
            "run_value": run_value, "value": value, "metric_delta": value - run_value,
            "tolerance": {"logit": tolerance.logit, "metric": tolerance.metric}, "passed": not failures,
            "failures": failures, "seconds": round(time.perf_counter() - start, 3)}
