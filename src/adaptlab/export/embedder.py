"""Export of sentence-embedding rungs (export kind ``embedder``): weights, a merged sentence-transformers folder, ONNX
(the encoder with its pooling and L2 normalisation, output ``sentence_embedding``) and int8.

Parity against the trained run: the run's recorded test predictions hold cosines it computed (each pair's cosine,
a triplet's anchor-positive and anchor-negative cosines, a retrieval query's cosine to each of its top documents).
Every artefact recomputes those cosines from the same texts; ``max |Δprob|`` in the parity table is the largest
cosine difference, ``max |Δlogit|`` the largest difference of an embedding component against the rung's weights
reloaded, ``changed`` the retrieval queries whose best document (among the recorded top ones) or the triplets whose
closer text changed, and the metric row the mean cosine against the recorded one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.bundle import ARTIFACT_PATHS, load_method
from adaptlab.errors import UserError
from adaptlab.export.parity import over_tolerance
from adaptlab.runs.files import read_run_jsonl
from adaptlab.tasks.embedding.ship import encode_sentence_folder, onnx_encode

#: Recorded cosines checked per artefact unless --parity-limit says otherwise (records, not cosines).
PARITY_RECORDS = 256


@dataclass
class CosineReference:
    """Text pairs whose cosine the run recorded, grouped per record (one group: one decision that can change)."""

    left: list[str]
    right: list[str]
    recorded: np.ndarray
    groups: list[list[int]]  # indices into left/right of each record's cosines, in recorded order

    @classmethod
    def from_records(cls, records: list[dict]) -> CosineReference:
        left, right, recorded, groups = [], [], [], []
        for r in records:
            pairs = _recorded_pairs(r)
            groups.append(list(range(len(left), len(left) + len(pairs))))
            for a, b, c in pairs:
                left.append(a)
                right.append(b)
                recorded.append(c)
        if not left:
            raise UserError("the run's predictions.jsonl holds no recorded cosines to check parity against.")
        return cls(left, right, np.asarray(recorded, dtype=np.float64), groups)

    def texts(self) -> list[str]:
        return list(dict.fromkeys(self.left + self.right))


def _recorded_pairs(record: dict) -> list[tuple[str, str, float]]:
    """(text, text, cosine) of one embedding-task record (see ``tasks/embedding/records.py``)."""
    if "query" in record:
        return [(record["query"], t, float(s)) for t, s in zip(record.get("top_texts", []),
                                                                 record.get("top_scores", []))]
    if "negative" in record:
        return [(record["first"], record["second"], float(record["cosine_positive"])),
                (record["first"], record["negative"], float(record["cosine_negative"]))]
    return [(record["first"], record["second"], float(record["prediction"]))]


def build_embedder(run_dir: Path, staging: Path, manifest: dict, merge: bool, onnx: bool, int8: bool, tolerance: Any,
                   int8_tolerance: Any, limit: int | None, say: Any) -> dict:
    from adaptlab.export.bundling import copy_weights, finish

    say("copying weights")
    copy_weights(run_dir, staging)
    manifest["artifacts"]["weights"] = {"path": ARTIFACT_PATHS["weights"]}
    ref = CosineReference.from_records(read_run_jsonl(run_dir / "predictions.jsonl")[: limit or PARITY_RECORDS])
    method = load_method(staging, manifest)
    texts = ref.texts()
    say(f"parity: rung weights on {len(ref.left)} recorded cosines")
    weights = method.encode(texts)
    checks = [check(ref, texts, "weights", weights, weights, tolerance, "weights/")]
    if merge or onnx:
        checks += _exports(method, staging, manifest, ref, texts, weights, merge, onnx, int8, tolerance,
                           int8_tolerance, say)
    reference = ("the trained run: the cosines its test predictions recorded (predictions.jsonl: pairs, triplets, "
                 "each query's top documents), recomputed from the same texts; embeddings against the rung's weights "
                 "reloaded")
    return finish(run_dir, staging, manifest, checks, len(ref.groups), "mean_cosine", reference)


def _exports(method: Any, staging: Path, manifest: dict, ref: CosineReference, texts: list[str],
             weights: np.ndarray, merge: bool, onnx: bool, int8: bool, tolerance: Any, int8_tolerance: Any,
             say: Any) -> list[dict]:
    from adaptlab.export.bundling import opset
    from adaptlab.export.onnx import INT8_FILE, quantize_int8

    checks, model = [], merged_sentence_model(method, staging / "weights")
    max_length = int(manifest["max_length"] or 512)
    if merge:
        say("merging and saving merged/")
        model.save(str(staging / "merged"), create_model_card=False, safe_serialization=True)
        manifest["artifacts"]["merged"] = {"path": ARTIFACT_PATHS["merged"], "format": "sentence-transformers"}
        merged = encode_sentence_folder(staging / "merged", texts, max_length)
        checks.append(check(ref, texts, "merged", merged, weights, tolerance, "merged/"))
    if onnx:
        say("exporting ONNX (encoder, pooling and normalisation)")
        fp32 = export_sentence_encoder(model, staging / "onnx", max_length)
        manifest["artifacts"]["onnx"] = {"path": ARTIFACT_PATHS["onnx"], "opset": opset(fp32),
                                         "output": "sentence_embedding (L2-normalised)"}
        tokenizer = model.tokenizer
        checks.append(check(ref, texts, "onnx", onnx_encode(fp32, tokenizer, texts, max_length), weights, tolerance,
                            ARTIFACT_PATHS["onnx"]))
        if int8:
            say("quantising to int8")
            q = quantize_int8(fp32, staging / "onnx" / INT8_FILE)
            manifest["artifacts"]["int8"] = {"path": ARTIFACT_PATHS["int8"], "quantization": "dynamic int8"}
            checks.append(check(ref, texts, "int8", onnx_encode(q, tokenizer, texts, max_length), weights,
                                int8_tolerance, ARTIFACT_PATHS["int8"]))
    return checks


def check(ref: CosineReference, texts: list[str], artifact: str, vectors: np.ndarray, weights: np.ndarray,
          tolerance: Any, file: str) -> dict:
    """One parity row: the artefact's cosines against the recorded ones, its embeddings against the weights'."""
    index = {t: i for i, t in enumerate(texts)}
    v = np.asarray(vectors, dtype=np.float64)
    cos = np.einsum("ij,ij->i", v[[index[t] for t in ref.left]], v[[index[t] for t in ref.right]])
    d_cos = float(np.max(np.abs(cos - ref.recorded)))
    d_emb = float(np.max(np.abs(v - np.asarray(weights, dtype=np.float64))))
    changed = sum(int(np.argmax(cos[g])) != int(np.argmax(ref.recorded[g])) for g in ref.groups if len(g) > 1)
    value, recorded = float(cos.mean()), float(ref.recorded.mean())
    failures = []
    if tolerance.logit is not None and d_emb > tolerance.logit:
        failures.append(over_tolerance("max |Δembedding| against the weights", d_emb, tolerance.logit))
    if d_cos > tolerance.prob:
        failures.append(over_tolerance("max |Δcosine| against the recorded", d_cos, tolerance.prob))
    if abs(value - recorded) > tolerance.metric:
        failures.append(over_tolerance("|Δmean cosine|", abs(value - recorded), tolerance.metric))
    return {"artifact": artifact, "file": file, "max_abs_logit_diff": d_emb, "max_abs_prob_diff": d_cos,
            "changed_predictions": int(changed), "metric": "mean_cosine", "value": value,
            "metric_delta": value - recorded, "passed": not failures, "failures": failures}


def merged_sentence_model(method: Any, weights: Path) -> Any:
    """The rung as one plain sentence-transformers model: a LoRA adapter merged into a fresh copy of the base
    (peft's ``merge_and_unload``); a fully trained rung as it is."""
    from peft import PeftModel

    from adaptlab.methods._sentence import ADAPTER_DIR

    adapter = weights / ADAPTER_DIR
    if not adapter.is_dir():
        return method.sentence_model().eval()
    model = method.base()
    module = model[0]
    module.model = PeftModel.from_pretrained(module.model, str(adapter)).merge_and_unload()
    return model.eval()


def export_sentence_encoder(model: Any, dest: Path, max_length: int) -> Path:
    """``dest/model.onnx``: token ids in, the L2-normalised sentence embedding out (pooling inside the graph)."""
    import warnings

    import torch

    from adaptlab.export.onnx import MODEL_FILE, OPSET

    dest.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().to("cpu")
    sample = model.tokenizer(["a short example", "a somewhat longer second example text"], padding=True,
                             truncation=True, max_length=max_length, return_tensors="pt")
    inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]

    class Embedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features = self.model(dict(zip(inputs, tensors)))
            return torch.nn.functional.normalize(features["sentence_embedding"], p=2, dim=1)

    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes["sentence_embedding"] = {0: "batch"}
    file = dest / MODEL_FILE
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(Embedding().eval(), tuple(sample[k] for k in inputs), str(file), input_names=inputs,
                          output_names=["sentence_embedding"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    model.tokenizer.save_pretrained(str(dest))
    return file
