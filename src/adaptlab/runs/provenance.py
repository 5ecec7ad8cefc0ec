"""Where a result came from: data and model hashes, package versions, git revision, seed, machine."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "adaptlab", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "sentence-transformers",
    "scikit-learn", "numpy",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """The installed version of each package of ``names`` (those not installed are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_revision(path: Path | None = None) -> str | None:
    """The git commit of the adaptlab source (or ``path``), with '+dirty' when the tree has changes."""
    where = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hash_records(rows: list[Any]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def provenance(*, model: Any, data_hash: str, seed: int, config_hash: str, trust_remote_code: bool) -> dict:
    import torch

    return {
        "model": model.spec,
        "model_source": model.source,
        "model_sha256": model.sha256,
        "data_sha256": data_hash,
        "config_sha256": config_hash,
        "seed": seed,
        "trust_remote_code": trust_remote_code,
        "packages": package_versions(),
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
