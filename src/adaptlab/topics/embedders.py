"""What turns texts into vectors: the base model's sentence embedder, or a trained embedding rung.

Both give L2-normalised float32 rows, one per text. The base model goes through the embedding rungs' own
:class:`adaptlab.methods._embedding.Embedder` (sentence-transformers, mean pooling unless the model says otherwise);
a run folder is loaded with :func:`adaptlab.pipeline.load_run` and must offer ``method.encode(texts)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.errors import UserError

DEFAULT_MODEL = "minilm"


@dataclass
class TextEncoder:
    name: str
    """Short name for the default output folder (the model, or <ladder>-<rung>)."""
    encode: Callable[[list[str]], np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    """What topics.json records about the embedding."""

    def __call__(self, texts: list[str]) -> np.ndarray:
        return checked_vectors(self.encode(list(texts)), len(texts), self.name)


def base_encoder(model: str, max_length: int = 128) -> TextEncoder:
    """The base model's sentence embedder (a packaged name such as minilm, a folder, or a hub id)."""
    from adaptlab.context import RunContext
    from adaptlab.methods._embedding import Embedder

    ctx = RunContext(model_spec=model, task="topics", label_names=[], max_length=max_length)  # Embedder reads only
    resolved = ctx.model  # the model, device and length from it; an unknown model is a UserError here
    embedder = Embedder(ctx)
    info = {"kind": "base model", "model": model, "model_source": resolved.source, "model_sha256": resolved.sha256,
            "dimension": embedder.dimension, "max_length": max_length}
    return TextEncoder(name=slug(model), encode=embedder.encode, info=info)


def check_run_folder(run_dir: Path) -> None:
    """A UserError before anything heavy loads when ``--embedding`` names no rung folder."""
    if not run_dir.is_dir():
        raise UserError(f"--embedding {run_dir}: no such folder. Pass a finished embedding rung's folder, e.g. "
                        "runs/<ladder>/<rung> (`adaptlab runs list` shows them).")
    if not (run_dir / "run.json").is_file():
        raise UserError(f"--embedding {run_dir}: not a run folder (no run.json). Pass a finished embedding rung's "
                        "folder, e.g. runs/<ladder>/<rung> (`adaptlab runs list` shows them).")


def run_encoder(run_dir: Path) -> TextEncoder:
    """A trained embedding rung's encoder, from its folder (run.json and weights/)."""
    from adaptlab.pipeline import load_run

    run_dir = Path(run_dir)
    check_run_folder(run_dir)
    task, method, info = load_run(run_dir)
    rung = (info.get("rung") or {}).get("name") or run_dir.name
    kind = (info.get("rung") or {}).get("method") or type(method).__name__
    if task.export_kind != "embedder":  # what its task ships says it embeds (the embedding task's rungs)
        raise UserError(f"--embedding {run_dir}: rung '{rung}' (method {kind}) gives no sentence embeddings (it is "
                        "not a sentence-embedding rung); pass an embedding rung's folder, or --model to embed with a "
                        "base model.")
    context = info.get("context") or {}
    record = {"kind": "rung", "run_dir": str(run_dir), "rung": rung, "method": kind,
              "model": context.get("model_spec"), "max_length": context.get("max_length")}
    return TextEncoder(name=slug(f"{run_dir.resolve().parent.name}-{run_dir.name}"), encode=method.encode,
                       info=record)


def checked_vectors(vectors: Any, n: int, name: str) -> np.ndarray:
    """One finite, L2-normalised float32 row per text, or an error naming the embedding."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != n:
        raise RuntimeError(f"embedding {name} returned shape {array.shape} for {n} texts; expected ({n}, dim).")
    if not np.isfinite(array).all():
        raise RuntimeError(f"embedding {name} returned NaN or infinite values.")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms > 0, norms, 1.0)


def slug(text: str) -> str:
    """A folder-friendly short name: 'sentence-transformers/all-MiniLM' -> 'all-minilm'."""
    tail = str(text).rstrip("/").split("/")[-1]
    return re.sub(r"[^a-z0-9._-]+", "-", tail.lower()).strip("-.") or "embedding"
