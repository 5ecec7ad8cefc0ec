"""Export of token classifiers (export kind ``tagger``): weights, merged transformers folder, ONNX and int8, each
checked on per-word logits against the rung's weights reloaded, and on tags and entity F1 against the run's recorded
test predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptlab.bundle import ARTIFACT_PATHS, load_method
from adaptlab.runs.files import read_run_jsonl


def build_tagger(run_dir: Path, staging: Path, manifest: dict, merge: bool, onnx: bool, int8: bool, tolerance: Any,
                 int8_tolerance: Any, limit: int | None, say: Any) -> dict:
    from adaptlab.export.bundling import copy_weights, finish
    from adaptlab.export.merge import check_mergeable
    from adaptlab.tasks.token_classification.ship import TokenPredictor, method_parity, parity_check, torch_backend

    say("copying weights")
    copy_weights(run_dir, staging)
    manifest["artifacts"]["weights"] = {"path": ARTIFACT_PATHS["weights"]}
    records = read_run_jsonl(run_dir / "predictions.jsonl")[:limit]
    types = sorted({n[2:] for n in manifest["labels"] if n != "O"})
    labels, max_length = manifest["labels"], int(manifest["max_length"] or 512)
    method = load_method(staging, manifest)
    if merge or onnx:  # before any parity pass: a rung that can't be merged for this bundle says so at once
        check_mergeable(method, manifest["export_kind"])
    say(f"parity: rung weights on {len(records)} test sentences")
    if method.merges_as() == "tagger":  # a transformers token classifier: per-word logits too
        weights = TokenPredictor(torch_backend(method.model.eval()), method.tokenizer, labels, max_length, "weights")
        result, ref = parity_check(records, "weights", weights, None, tolerance, "weights/", types)
    else:  # linear_probe, spaCy: their tags only (no merge or ONNX gets here: check_mergeable refused it)
        result, ref = method_parity(records, method, tolerance, "weights/", types), []
    checks = [result]
    if merge or onnx:
        checks += _exports(method, staging, manifest, records, ref, types, merge, onnx, int8, tolerance,
                           int8_tolerance, say)
    reference = ("the trained run: its recorded test predictions (predictions.jsonl) for tags and entity F1"
                 + ("; its weights reloaded for per-word logits (the first sub-token of each word)"
                    if method.merges_as() == "tagger" else ""))
    return finish(run_dir, staging, manifest, checks, len(records), "entity_micro_f1", reference)


def _exports(method: Any, staging: Path, manifest: dict, records: list[dict], ref: list, types: list[str],
             merge: bool, onnx: bool, int8: bool, tolerance: Any, int8_tolerance: Any, say: Any) -> list[dict]:
    from transformers import AutoModelForTokenClassification

    from adaptlab.export.bundling import opset
    from adaptlab.export.merge import merged_model, save_merged
    from adaptlab.tasks.token_classification.ship import TokenPredictor, onnx_backend, parity_check, torch_backend

    labels, max_length, tokenizer = manifest["labels"], int(manifest["max_length"] or 512), method.tokenizer
    model, checks = merged_model(method, manifest["export_kind"]), []
    if merge:
        say("merging and saving merged/")
        save_merged(model, tokenizer, staging / "merged")
        manifest["artifacts"]["merged"] = {"path": ARTIFACT_PATHS["merged"], "format": "transformers"}
        reloaded = AutoModelForTokenClassification.from_pretrained(str(staging / "merged"), use_safetensors=True)
        predictor = TokenPredictor(torch_backend(reloaded.eval()), tokenizer, labels, max_length, "merged")
        checks.append(parity_check(records, "merged", predictor, ref, tolerance, "merged/", types)[0])
    if onnx:
        from adaptlab.export.onnx import INT8_FILE, export_classifier, quantize_int8

        say("exporting ONNX")
        fp32 = export_classifier(model, tokenizer, staging / "onnx", max_length, per_token=True)
        manifest["artifacts"]["onnx"] = {"path": ARTIFACT_PATHS["onnx"], "opset": opset(fp32)}
        predictor = TokenPredictor(onnx_backend(fp32), tokenizer, labels, max_length, "onnx")
        checks.append(parity_check(records, "onnx", predictor, ref, tolerance, ARTIFACT_PATHS["onnx"], types)[0])
        if int8:
            say("quantising to int8")
            q = quantize_int8(fp32, staging / "onnx" / INT8_FILE)
            manifest["artifacts"]["int8"] = {"path": ARTIFACT_PATHS["int8"], "quantization": "dynamic int8"}
            predictor = TokenPredictor(onnx_backend(q), tokenizer, labels, max_length, "int8")
            checks.append(parity_check(records, "int8", predictor, ref, int8_tolerance, ARTIFACT_PATHS["int8"],
                                       types)[0])
    return checks
