"""Pieces every bundle builder shares: copying the rung's weights, hashing files, and writing parity.json and the
manifest once the checks are done."""

from __future__ import annotations

import shutil
from pathlib import Path

from adaptlab.bundle import ARTIFACT_PATHS, MANIFEST, PARITY
from adaptlab.errors import UserError
from adaptlab.runs.files import write_json_atomic

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def copy_weights(run_dir: Path, dest: Path) -> None:
    pickles = [str(p.relative_to(run_dir)) for p in (run_dir / "weights").rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise UserError(f"{run_dir}: weights hold pickle files {pickles[:3]}; bundles ship safetensors only.")
    shutil.copytree(run_dir / "weights", dest / "weights")


def file_hashes(folder: Path) -> dict[str, str]:
    from adaptlab.models.hashing import file_sha256

    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def finish(run_dir: Path, staging: Path, manifest: dict, checks: list[dict], examples: int, metric: str,
            reference: str) -> dict:
    report = {
        "run": str(run_dir.resolve()),
        "split": "test",
        "examples": examples,
        "primary_metric": metric,
        "reference": reference,
        "checks": checks,
        "passed": all(c["passed"] for c in checks),
    }
    write_json_atomic(staging / PARITY, report)
    manifest["parity"] = {"file": PARITY, "passed": report["passed"],
                          "artifacts": {c["artifact"]: c["passed"] for c in checks}}
    for name, artifact in manifest["artifacts"].items():
        artifact["bytes"] = size(staging / ARTIFACT_PATHS[name])
    manifest["files"] = file_hashes(staging)
    write_json_atomic(staging / MANIFEST, manifest)
    return report


def opset(file: Path) -> int | None:
    import onnx

    model = onnx.load(str(file), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
