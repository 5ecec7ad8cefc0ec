"""Export a finished rung as a bundle: copy -> (merge) -> (ONNX) -> (int8) -> parity -> manifest -> publish.

    adaptlab export runs/rotten_tomatoes/lora --to bundles/rt-lora --merge --onnx --int8

Classification runs are checked on their whole test split (probabilities, logits, labels, primary metric);
generation runs (causal LMs) greedy-decode the first 64 test prompts with the weights and with every export
(logits per step, changed outputs, primary metric); embedding runs recompute the cosines their test predictions
recorded (:mod:`adaptlab.export.embedder`).

The bundle is built in a hidden sibling folder. Only if every artefact passes parity is it renamed to ``--to``;
otherwise it is kept at ``<to>.failed`` (with its ``parity.json``) and :class:`ParityError` says by how much.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adaptlab.bundle import (
    ARTIFACT_PATHS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MethodPredictor,
    OnnxPredictor,
    TransformersPredictor,
    load_method,
)
from adaptlab.errors import UserError
from adaptlab.export import parity
from adaptlab.export.bundling import copy_weights, finish, opset
from adaptlab.export.merge import check_mergeable
from adaptlab.export.parity import FP32_TOLERANCE, INT8_TOLERANCE, ParityError, ParityReference, Tolerance
from adaptlab.runs.files import check_output_folder, read_run_json, read_run_jsonl

Progress = Callable[[str], None]
#: Test prompts greedy-decoded per artefact of a generation run unless --parity-limit says otherwise.
GENERATION_PARITY_EXAMPLES = 64


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """(run.json, metrics.json) of a finished rung; UserError naming the folder if it isn't one."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise UserError(f"{run_dir}: not a run folder (no run.json). Pass <output>/<rung>, e.g. runs/<ladder>/lora.")
    info = read_run_json(run_dir / "run.json")
    metrics_file = run_dir / "metrics.json"
    metrics = read_run_json(metrics_file) if metrics_file.is_file() else {}
    if metrics.get("status") != "ok":
        raise UserError(f"{run_dir}: this rung did not finish successfully (status: {metrics.get('status')}); "
                        "nothing to export.")
    if not (run_dir / "weights").is_dir():
        raise UserError(f"{run_dir}: no weights/ folder; the rung saved nothing to ship.")
    from adaptlab.methods import METHODS

    method = (info.get("rung") or {}).get("method")
    if isinstance(method, str) and method in METHODS and not METHODS.get(method).predicts:
        raise UserError(f"{run_dir}: a {method} rung is a stage that predicts nothing on its own; export a rung that "
                        f"starts from it (`from: {run_dir.name}`) instead.")
    return info, metrics


def prompt_template(info: dict) -> str | None:
    """The prompt template a rung formats its inputs with, if it has one (prompting and generative rungs)."""
    for source in (info.get("params") or {}, info.get("task") or {}):
        for key in ("prompt_template", "template"):
            if isinstance(source.get(key), str):
                return source[key]
    return None


def bundle_pairs(info: dict) -> bool | None:
    """Whether the rung was trained on text pairs (served and predicted only with a pair then); None: unknown."""
    from adaptlab.bundle import trained_on_pairs

    return trained_on_pairs(info)


def build_manifest(run_dir: Path, info: dict, metrics: dict) -> dict:
    """Everything needed to rebuild and judge the rung, without the run folder."""
    from adaptlab import __version__

    ctx = info["context"]
    prov = metrics.get("provenance") or {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": metrics.get("rung") or run_dir.name,
        "task": ctx["task"],
        "method": info["rung"]["method"],
        "params": info["params"],
        "base_model": {"spec": ctx["model_spec"], "source": prov.get("model_source"),
                       "sha256": prov.get("model_sha256")},
        "labels": ctx.get("label_names", []),
        "label_descriptions": ctx.get("label_descriptions", {}),
        "max_length": ctx.get("max_length"),
        "text_pair": bundle_pairs(info),
        "prompt_template": prompt_template(info),
        "primary_metric": metrics.get("primary_metric"),
        "metrics": metrics.get("metrics", {}),
        "intervals": metrics.get("intervals", {}),
        "context": ctx,
        "provenance": {
            **prov,
            "run_dir": str(Path(run_dir).resolve()),
            "ladder": info.get("ladder"),
            "rung_sha256": info.get("rung_sha256"),
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "exported_by": f"adaptlab {__version__}",
        },
        "artifacts": {},
    }


def export_kind(task_name: str, where: Path) -> str:
    """What the run's task ships (classifier, decoder, tagger), as the task declares; UserError when it ships none."""
    from adaptlab.tasks import get_task

    kind = get_task(task_name).export_kind
    if kind not in BUILDERS:
        raise UserError(f"{where}: runs of task {task_name!r} can't be exported as a bundle yet.")
    return kind


def export_run(
    run_dir: Path,
    to: Path,
    *,
    merge: bool = False,
    onnx: bool = False,
    int8: bool = False,
    tolerance: Tolerance = FP32_TOLERANCE,
    int8_tolerance: Tolerance = INT8_TOLERANCE,
    parity_limit: int | None = None,
    progress: Progress | None = None,
) -> dict:
    """Write the bundle of ``run_dir`` to ``to``; returns the parity report. Raises ParityError past tolerance."""
    say = progress or (lambda _msg: None)
    run_dir, to = Path(run_dir), Path(to)
    info, metrics = read_run(run_dir)
    kind = export_kind(info["context"]["task"], run_dir)
    check_output_folder(to, "Pass --to a new folder (or an earlier bundle, which is replaced).")
    _check_destination(to, run_dir)
    onnx = onnx or int8  # int8 quantises the fp32 ONNX file
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{to.name}.partial-", dir=to.parent))
    try:
        manifest = build_manifest(run_dir, info, metrics)
        manifest["export_kind"] = kind
        build = BUILDERS[kind]
        report = build(run_dir, staging, manifest, merge, onnx, int8, tolerance, int8_tolerance, parity_limit, say)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = to if report["passed"] else to.with_name(to.name + ".failed")
    _publish(staging, final)
    report["bundle"] = str(final)
    if not report["passed"]:
        raise ParityError(parity.failure_message(report) + f"\nthe rejected export is kept at {final}", report)
    return report


def _build(run_dir: Path, staging: Path, manifest: dict, merge: bool, onnx: bool, int8: bool, tolerance: Tolerance,
           int8_tolerance: Tolerance, limit: int | None, say: Progress) -> dict:
    say("copying weights")
    copy_weights(run_dir, staging)
    manifest["artifacts"]["weights"] = {"path": ARTIFACT_PATHS["weights"]}
    records = read_run_jsonl(run_dir / "predictions.jsonl")
    ref = ParityReference.from_records(records, manifest["labels"], manifest["primary_metric"] or "macro_f1", limit)
    say(f"parity: rung weights on {len(ref)} test examples")
    method = load_method(staging, manifest)
    if merge or onnx:  # before any parity pass: a rung that can't be merged for this bundle says so at once
        check_mergeable(method, manifest["export_kind"])
    checks = []
    result, ref.logits = parity.check(ref, "weights", MethodPredictor(method, manifest), tolerance, "weights/")
    if ref.logits is not None:
        ref.logits = ref.logits.astype("float64")
    checks.append(result)
    max_length = int(manifest["max_length"] or 512)
    if merge or onnx:
        from adaptlab.export.merge import merged_model, save_merged

        tolerance = parity.export_tolerance(method, tolerance)
        model = merged_model(method, manifest["export_kind"])
        if merge:
            say("merging and saving merged/")
            save_merged(model, method.tokenizer, staging / "merged")
            manifest["artifacts"]["merged"] = {"path": ARTIFACT_PATHS["merged"], "format": "transformers"}
            predictor = TransformersPredictor(staging / "merged", manifest["labels"], max_length)
            checks.append(parity.check(ref, "merged", predictor, tolerance, "merged/")[0])
            del predictor
        if onnx:
            from adaptlab.export.onnx import INT8_FILE, export_classifier, quantize_int8

            say("exporting ONNX")
            fp32 = export_classifier(model, method.tokenizer, staging / "onnx", max_length)
            manifest["artifacts"]["onnx"] = {"path": ARTIFACT_PATHS["onnx"], "opset": opset(fp32)}
            predictor = OnnxPredictor(fp32, manifest["labels"], max_length, backend="onnx")
            checks.append(parity.check(ref, "onnx", predictor, tolerance, ARTIFACT_PATHS["onnx"])[0])
            if int8:
                say("quantising to int8")
                q = quantize_int8(fp32, staging / "onnx" / INT8_FILE)
                manifest["artifacts"]["int8"] = {"path": ARTIFACT_PATHS["int8"], "quantization": "dynamic int8"}
                predictor = OnnxPredictor(q, manifest["labels"], max_length, backend="int8")
                checks.append(parity.check(ref, "int8", predictor, int8_tolerance, ARTIFACT_PATHS["int8"])[0])
    reference = ("the trained run: its recorded test predictions (predictions.jsonl) for probabilities, labels and "
                 "the metric; its weights reloaded for logits")
    return finish(run_dir, staging, manifest, checks, len(ref), ref.primary_metric, reference)


def _build_generation(run_dir: Path, staging: Path, manifest: dict, merge: bool, onnx: bool, int8: bool,
                      tolerance: Tolerance, int8_tolerance: Tolerance, limit: int | None, say: Progress) -> dict:
    """Causal LM rungs: the same greedy loop decodes the test prompts with the weights and with each export."""
    from adaptlab.export.decoder import OnnxDecoder, check_generation, eos_ids, torch_step

    say("copying weights")
    copy_weights(run_dir, staging)
    manifest["artifacts"]["weights"] = {"path": ARTIFACT_PATHS["weights"]}
    records = read_run_jsonl(run_dir / "predictions.jsonl")[: limit or GENERATION_PARITY_EXAMPLES]
    if not records or "prompt" not in records[0]:
        raise UserError(f"{run_dir}: predictions.jsonl has no test prompts to check parity against.")
    generation = ((manifest["context"].get("extra") or {}).get("task") or {}).get("generation") or {}
    max_new = int(generation.get("max_new_tokens") or 32)
    metric = manifest["primary_metric"] or "rougeL"
    method = load_method(staging, manifest)
    if merge or onnx:  # before any parity pass: a rung that can't be merged for this bundle says so at once
        check_mergeable(method, manifest["export_kind"])
    tokenizer, eos = method.tokenizer, eos_ids(method.model, method.tokenizer)

    def run_check(artifact, step, tol, file, reference):
        return check_generation(records, artifact, step, tokenizer, reference, tol, file, max_new, eos, metric)

    say(f"parity: rung weights, greedy on {len(records)} test prompts")
    result, ref = run_check("weights", torch_step(method.model), tolerance, "weights/", None)
    checks = [result]
    if merge or onnx:
        from transformers import AutoModelForCausalLM

        from adaptlab.export.merge import merged_model, save_merged

        tolerance = parity.export_tolerance(method, tolerance)
        model = merged_model(method, manifest["export_kind"])
        if merge:
            say("merging and saving merged/")
            save_merged(model, tokenizer, staging / "merged")
            manifest["artifacts"]["merged"] = {"path": ARTIFACT_PATHS["merged"], "format": "transformers"}
            reloaded = AutoModelForCausalLM.from_pretrained(str(staging / "merged"), use_safetensors=True).eval()
            checks.append(run_check("merged", torch_step(reloaded), tolerance, "merged/", ref)[0])
        if onnx:
            from adaptlab.export.decoder import export_decoder
            from adaptlab.export.onnx import INT8_FILE, quantize_int8

            say("exporting the decoder to ONNX (past key values as inputs and outputs)")
            fp32 = export_decoder(model, tokenizer, staging / "onnx")
            manifest["artifacts"]["onnx"] = {"path": ARTIFACT_PATHS["onnx"], "opset": opset(fp32),
                                             "kv_cache": "explicit past.{i}.key/value inputs, present.* outputs"}
            checks.append(run_check("onnx", OnnxDecoder(fp32).step, tolerance, ARTIFACT_PATHS["onnx"], ref)[0])
            if int8:
                say("quantising to int8")
                q = quantize_int8(fp32, staging / "onnx" / INT8_FILE)
                manifest["artifacts"]["int8"] = {"path": ARTIFACT_PATHS["int8"], "quantization": "dynamic int8"}
                checks.append(run_check("int8", OnnxDecoder(q).step, int8_tolerance, ARTIFACT_PATHS["int8"], ref)[0])
    reference = ("the rung's weights reloaded, greedy-decoding the run's test prompts (predictions.jsonl) with the "
                 "same loop as every export; the weights' own row compares with the recorded predictions")
    return finish(run_dir, staging, manifest, checks, len(records), metric, reference)


def _check_destination(to: Path, run_dir: Path) -> None:
    """Refuse to replace anything but an earlier bundle, and never write into the run itself."""
    if to.resolve() == run_dir.resolve() or run_dir.resolve() in to.resolve().parents:
        raise UserError(f"--to {to}: choose a folder outside the run folder {run_dir}.")
    if to.exists() and (not to.is_dir() or (any(to.iterdir()) and not (to / MANIFEST).is_file())):
        raise UserError(f"--to {to}: exists and is not an adaptlab bundle; choose a new or empty folder.")


def _publish(staging: Path, final: Path) -> None:
    """Rename the finished folder into place, replacing an earlier bundle there."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def summary_rows(report: dict) -> list[dict[str, Any]]:
    """The parity table as rows (for printing)."""
    return [
        {
            "artifact": c["artifact"],
            "max |Δlogit|": "-" if c["max_abs_logit_diff"] is None else f"{c['max_abs_logit_diff']:.2e}",
            "max |Δprob|": "-" if c["max_abs_prob_diff"] is None else f"{c['max_abs_prob_diff']:.2e}",
            "changed": str(c["changed_predictions"]),
            c["metric"]: f"{c['value']:.4f} ({c['metric_delta']:+.4f})",
            "status": "ok" if c["passed"] else "FAILED",
        }
        for c in report["checks"]
    ]


def _build_tagger(*args: Any) -> dict:
    from adaptlab.export.tagger import build_tagger

    return build_tagger(*args)


def _build_embedder(*args: Any) -> dict:
    from adaptlab.export.embedder import build_embedder

    return build_embedder(*args)


#: The bundle builder for each export kind a task may declare.
BUILDERS: dict[str, Callable[..., dict]] = {
    "classifier": _build, "decoder": _build_generation, "tagger": _build_tagger, "embedder": _build_embedder,
}
