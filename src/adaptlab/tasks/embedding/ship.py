"""What ships for an embedding rung: one predictor interface (``encode(texts)`` -> L2-normalised float32 rows) over
each backend of a bundle: the rung's own weights, the merged sentence-transformers folder, ONNX or int8.

    >>> import adaptlab
    >>> encoder = adaptlab.load("bundles/chitchat-mnr")          # onnx, then merged, then weights
    >>> vectors = encoder.encode(["how was your weekend?", "we went hiking"])
    >>> float(vectors[0] @ vectors[1])                             # cosine similarity
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class EmbeddingPredictor:
    """A ready sentence encoder; ``backend`` names what computes it."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], backend: str, manifest: dict | None = None):
        self._encode = encode
        self.backend = backend
        self.manifest = manifest or {}

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text (a single string is one text)."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.asarray(self._encode(items), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def __repr__(self) -> str:
        return f"<EmbeddingPredictor backend={self.backend}>"


def load_embedder(artifact: Path, manifest: dict, backend: str, method: Callable[[], Any]) -> EmbeddingPredictor:
    """The predictor over ``backend`` of a bundle, whose file or folder is ``artifact``; ``method()`` rebuilds the
    rung (weights)."""
    max_length = int(manifest.get("max_length") or 512)
    if backend == "weights":
        return EmbeddingPredictor(method().encode, backend, manifest)
    if backend == "merged":
        model = sentence_folder(artifact, max_length)
        return EmbeddingPredictor(lambda texts: encode_with(model, texts), backend, manifest)
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(artifact.parent))
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    return EmbeddingPredictor(lambda texts: onnx_encode(session, tokenizer, texts, max_length), backend, manifest)


def sentence_folder(folder: Path, max_length: int) -> Any:
    """A saved sentence-transformers folder (safetensors) loaded on the CPU."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    model.max_seq_length = max_length
    return model


def encode_with(model: Any, texts: list[str]) -> np.ndarray:
    return model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)


def encode_sentence_folder(folder: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Embeddings from a saved sentence-transformers folder (safetensors), on the CPU."""
    return encode_with(sentence_folder(folder, max_length), texts)


def onnx_encode(session: Any, tokenizer: Any, texts: list[str], max_length: int, batch: int = 32) -> np.ndarray:
    """Embeddings of ``texts`` from an exported ONNX encoder (an onnxruntime session, or the file to open one)."""
    import onnxruntime as ort

    if not isinstance(session, ort.InferenceSession):
        session = ort.InferenceSession(str(session), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out = []
    for start in range(0, len(texts), batch):
        enc = tokenizer(list(texts[start:start + batch]), padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")
        out.append(session.run(None, {n: enc[n].astype(np.int64) for n in names})[0])
    return np.concatenate(out).astype(np.float32)
