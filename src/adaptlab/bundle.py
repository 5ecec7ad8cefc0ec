"""Shipped rungs: the bundle folder that ``adaptlab export`` writes, and ``adaptlab.load`` that reads it back.

    adaptlab export runs/rotten_tomatoes/lora --to bundles/rt-lora --merge --onnx --int8

    import adaptlab
    clf = adaptlab.load("bundles/rt-lora")               # the adapter over the base model (backend "weights")
    clf.predict(["a gorgeous, witty, seductive movie"])  # [{"label": "fresh", "scores": {"fresh": 0.93, ...}}]
    adaptlab.load("bundles/rt-lora", backend="int8")     # the quantised ONNX file, onnxruntime only

A bundle folder holds::

    manifest.json      base model (spec + sha256), task, labels, prompt template, metrics, provenance,
                       rung method and params, sha256 of every shipped file
    weights/           the rung's own weights as trained (safetensors: peft adapter, delta, head or full model)
    merged/            --merge: a plain transformers model folder (safetensors + tokenizer), no adaptlab needed
    onnx/              --onnx / --int8: model.onnx, model.int8.onnx and the tokenizer files
    parity.json        every shipped artefact checked against the trained run on its test split

Every backend gives a :class:`Predictor` with the same ``predict`` / ``predict_proba`` / ``predict_logits``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.errors import UserError

MANIFEST = "manifest.json"
PARITY = "parity.json"
FORMAT = "adaptlab.bundle"
FORMAT_VERSION = 1
#: Artefacts a bundle may hold, and the folder or file each lives at.
ARTIFACT_PATHS = {"weights": "weights", "merged": "merged", "onnx": "onnx/model.onnx", "int8": "onnx/model.int8.onnx"}
#: What ``backend="auto"`` picks, first present wins: exact fp32 exports before the rung's own weights.
AUTO_ORDER = ("onnx", "merged", "weights")
BATCH_SIZE = 64


@dataclass
class Prediction:
    """One text's predicted label and the probability of every label."""

    label: str
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "scores": self.scores}


class Predictor:
    """A ready classifier. Subclasses implement :meth:`predict_logits` or :meth:`predict_proba`."""

    backend: str = "?"

    def __init__(self, labels: list[str], manifest: dict | None = None):
        self.labels = list(labels)
        self.manifest = manifest or {}

    def predict_logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray | None:
        """Raw scores before the softmax, shape (n, labels); None for rungs that have none (embedding heads)."""
        return None

    def predict_proba(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """Label probabilities, shape (n, labels)."""
        logits = self.predict_logits(texts, pairs)
        assert logits is not None, f"{type(self).__name__} must implement predict_logits or predict_proba"
        return softmax(logits)

    def predict(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """``[{"label": ..., "scores": {label: probability}}]``, one per text (a single string is one text)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if isinstance(pairs, str):
            pairs = [pairs]
        probs = self.predict_proba(texts, list(pairs) if pairs is not None else None)
        return [to_prediction(row, self.labels).to_dict() for row in probs]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend} labels={self.labels}>"


def to_prediction(row: np.ndarray, labels: list[str]) -> Prediction:
    scores = {name: round(float(p), 6) for name, p in zip(labels, row)}
    return Prediction(labels[int(np.argmax(row))], scores)


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def length_batches(lengths: Sequence[int], batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (less padding), in a stable order."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# -- backends ----------------------------------------------------------------------------------------------------


class MethodPredictor(Predictor):
    """The rung itself, rebuilt by its method class from ``weights/`` over the base model (exactly as trained)."""

    backend = "weights"

    def __init__(self, method: Any, manifest: dict | None = None):
        super().__init__(method.label_names, manifest)
        self.method = method

    def predict_logits(self, texts, pairs=None):
        from adaptlab.methods._finetune import FineTuneMethod

        if not isinstance(self.method, FineTuneMethod):
            return None  # embedding and prompting rungs: probabilities only
        m = self.method
        return torch_logits(m.model, m.tokenizer, texts, pairs, m.ctx.max_length, m.ctx.torch_device)

    def predict_proba(self, texts, pairs=None):
        logits = self.predict_logits(texts, pairs)
        if logits is not None:
            return softmax(logits)
        return np.asarray(self.method.predict_proba(list(texts), list(pairs) if pairs else None), dtype=np.float32)


class TransformersPredictor(Predictor):
    """A plain transformers sequence-classification folder (the ``merged/`` export, or any such model)."""

    backend = "merged"

    def __init__(self, folder: Path, labels: list[str] | None = None, max_length: int = 512, device: str = "cpu",
                 manifest: dict | None = None):
        import torch
        from transformers import AutoTokenizer

        from adaptlab.methods._heads import load_classifier
        from adaptlab.runtime import kernels_for

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = load_classifier(folder, local_files_only=True).to(device).eval()
        config_labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        super().__init__(labels or config_labels, manifest)
        self.max_length, self.device = max_length, device
        half = next(self.model.parameters()).dtype in (torch.bfloat16, torch.float16)
        kernels_for(str(device), half)  # as the rung it was merged from predicted (adaptlab.runtime.cpu_kernels)

    def predict_logits(self, texts, pairs=None):
        return torch_logits(self.model, self.tokenizer, texts, pairs, self.max_length, self.device)


class OnnxPredictor(Predictor):
    """An ONNX classifier (fp32 or int8) run by onnxruntime on the CPU, with the tokenizer saved beside it."""

    def __init__(self, file: Path, labels: list[str], max_length: int, manifest: dict | None = None,
                 backend: str = "onnx", threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        super().__init__(labels, manifest)
        self.backend = backend
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(str(file.parent), local_files_only=True)
        self.max_length = max_length

    def predict_logits(self, texts, pairs=None):
        enc = self.tokenizer(list(texts), list(pairs) if pairs else None, truncation=True, max_length=self.max_length)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for idx in length_batches([len(ids) for ids in enc["input_ids"]]):
            batch = self.tokenizer.pad({k: [enc[k][i] for i in idx] for k in self.inputs if k in enc},
                                       return_tensors="np")
            feed = {k: np.asarray(batch[k], dtype=np.int64) for k in self.inputs}
            out[idx] = self.session.run(["logits"], feed)[0]
        return out


def torch_logits(model: Any, tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int,
                 device: str, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Logits of a transformers (or peft) sequence classifier, batched by length like the rungs predict."""
    import torch

    enc = tokenizer(list(texts), list(pairs) if pairs else None, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    chunks: dict[int, np.ndarray] = {}
    model.eval()
    with torch.inference_mode():
        for idx in length_batches([len(ids) for ids in enc["input_ids"]], batch_size):
            batch = tokenizer.pad({k: [enc[k][i] for i in idx] for k in keys}, return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            chunks.update(zip(idx.tolist(), logits))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([chunks[i] for i in range(len(texts))]).astype(np.float32)


# -- reading bundles -----------------------------------------------------------------------------------------------


def is_bundle(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: Path) -> dict:
    """The manifest of a bundle folder, checked to be one; UserError naming the folder otherwise."""
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise UserError(f"{path}: not an adaptlab bundle (no {MANIFEST}). Write one with `adaptlab export RUN --to "
                        f"{path}`.")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"{file}: not valid JSON ({e}). Export the bundle again.") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{file}: format is {manifest.get('format')!r}, expected {FORMAT!r}.")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{file}: bundle format version {manifest.get('format_version')} is newer than this adaptlab "
                        f"reads ({FORMAT_VERSION}); upgrade adaptlab.")
    return manifest


def trained_on_pairs(record: dict) -> bool | None:
    """Whether a rung was trained on text pairs, from its run.json or bundle manifest; None when it doesn't say.

    A run.json holds the ladder's data spec (``data.text_pair_column``); a manifest may hold the same ``data`` or a
    ``text_pair`` flag.
    """
    if isinstance(record.get("text_pair"), bool):
        return record["text_pair"]
    data = record.get("data")
    if isinstance(data, dict):
        return bool(data.get("text_pair_column"))
    return None


def pair_mismatch(name: str, trained: bool | None, given: bool, option: str = "text_pair") -> str | None:
    """Why giving (or not giving) a second text doesn't fit a rung trained on single texts or on pairs; else None."""
    if trained is False and given:
        return (f"{name} was trained on single texts, not text pairs: drop {option} (a second text the rung never "
                "saw in training would only change its answers).")
    if trained and not given:
        return f"{name} was trained on text pairs: give the second text with {option}."
    return None


def available_backends(path: Path, manifest: dict) -> list[str]:
    return [name for name in ARTIFACT_PATHS if name in manifest.get("artifacts", {}) and (path / ARTIFACT_PATHS[name])
            .exists()]


def load(path: str | Path, backend: str = "auto", *, base: str | None = None, device: str | None = None) -> Predictor:
    """A ready predictor from a bundle folder (or, for convenience, a finished run folder).

    ``backend``: ``"auto"`` (``onnx``, then ``merged``, then ``weights``: the first the bundle has), ``"weights"``
    (the rung over the base model), ``"merged"``, ``"onnx"`` or ``"int8"``. ``base`` overrides where the base model
    is found for ``weights`` (its sha256 must still match the manifest). ``device``: ``cpu``, ``cuda``, ``auto``.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"{path}: no such bundle folder.")
    if not is_bundle(path) and (path / "run.json").is_file():
        return _run_predictor(path, backend)
    manifest = read_manifest(path)
    kind = bundle_kind(path, manifest)
    have = available_backends(path, manifest)
    if backend == "auto":
        backend = next((b for b in AUTO_ORDER if b in have), "weights")
    if backend not in ARTIFACT_PATHS:
        raise UserError(f"backend {backend!r} unknown; choose one of: auto, {', '.join(ARTIFACT_PATHS)}.")
    if backend not in have:
        flag = {"merged": "--merge", "onnx": "--onnx", "int8": "--int8"}.get(backend, "")
        raise UserError(f"{path}: this bundle has no {backend!r} export (it has: {', '.join(have) or 'nothing'}). "
                        f"Export again with {flag}.")
    if kind == "tagger":
        return load_tagger(path, manifest, backend, base, device)
    if kind == "embedder":
        from adaptlab.tasks.embedding.ship import load_embedder

        return load_embedder(path / ARTIFACT_PATHS[backend], manifest, backend,
                             lambda: load_method(path, manifest, base=base, device=device))
    labels, max_length = manifest["labels"], int(manifest.get("max_length", 512))
    if backend == "weights":
        return MethodPredictor(load_method(path, manifest, base=base, device=device), manifest)
    if backend == "merged":
        return TransformersPredictor(path / "merged", labels, max_length, _device(device), manifest)
    return OnnxPredictor(path / ARTIFACT_PATHS[backend], labels, max_length, manifest, backend=backend)


def bundle_kind(path: Path, manifest: dict) -> str:
    """What the bundle ships (classifiers, taggers and sentence encoders load here); UserError for a kind
    ``adaptlab.load`` doesn't give."""
    from adaptlab.tasks import TASKS

    task = manifest.get("task")
    kind = manifest.get("export_kind") or (TASKS.get(task).export_kind if task in TASKS else None)
    if kind not in ("classifier", "tagger", "embedder"):
        raise UserError(f"{path}: adaptlab.load gives classifiers, token taggers and sentence encoders; this "
                        f"bundle's task is {task!r}. "
                        f"Serve it (adaptlab serve --adapter NAME={path}), load merged/ with transformers, or run "
                        "onnx/model.onnx with adaptlab.export.decoder.OnnxDecoder.")
    return kind


def _run_predictor(path: Path, backend: str) -> Any:
    """A predictor over a finished run folder's rung (its own weights)."""
    from adaptlab.runs.loading import load_run

    if backend not in ("auto", "weights"):
        raise UserError(f"{path} is a run folder; backend {backend!r} needs a bundle: adaptlab export {path} --to "
                        "DIR --onnx")
    task, method, _ = load_run(path)
    if task.export_kind == "tagger":
        from adaptlab.tasks.token_classification.ship import MethodTagger

        return MethodTagger(method)
    if task.export_kind == "embedder":
        from adaptlab.tasks.embedding.ship import EmbeddingPredictor

        return EmbeddingPredictor(method.encode, "weights")
    return MethodPredictor(method)


def load_tagger(path: Path, manifest: dict, backend: str, base: str | None, device: str | None) -> Any:
    """A token-classification predictor (entities with character offsets) over one backend of a tagger bundle."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from adaptlab.tasks.token_classification.ship import MethodTagger, TokenPredictor, onnx_backend, torch_backend

    labels, max_length = manifest["labels"], int(manifest.get("max_length") or 512)
    if backend == "weights":
        method = load_method(path, manifest, base=base, device=device)
        if method.merges_as() != "tagger":  # linear_probe, spaCy: their own tags, no per-word logits
            return MethodTagger(method)
        return TokenPredictor(torch_backend(method.model.eval(), method.ctx.torch_device), method.tokenizer, labels,
                              max_length, backend)
    folder = path / "merged" if backend == "merged" else (path / ARTIFACT_PATHS[backend]).parent
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if backend == "merged":
        model = AutoModelForTokenClassification.from_pretrained(str(folder), use_safetensors=True).eval()
        return TokenPredictor(torch_backend(model), tokenizer, labels, max_length, backend)
    return TokenPredictor(onnx_backend(path / ARTIFACT_PATHS[backend]), tokenizer, labels, max_length, backend)


def _device(device: str | None) -> str:
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_method(path: Path, manifest: dict, *, base: str | None = None, device: str | None = None) -> Any:
    """The bundle's rung rebuilt by its method class from ``weights/``, after checking the base model's sha256."""
    from adaptlab.context import RunContext
    from adaptlab.methods import METHODS

    context = dict(manifest["context"])
    if base is not None:
        context["model_spec"] = base
    if device is not None:
        context["device"] = device
    ctx = RunContext.from_dict(context)
    check_base(ctx.model.sha256, manifest, ctx.model_spec)
    from adaptlab.runs.loading import load_weights

    method_cls = METHODS.get(manifest["method"])
    return load_weights(path / "weights", method_cls, method_cls.Params.model_validate(manifest["params"]), ctx)


def check_base(actual_sha256: str | None, manifest: dict, where: str) -> None:
    """UserError unless the base model found is the one the rung was trained on (when both hashes are known)."""
    expected = (manifest.get("base_model") or {}).get("sha256")
    if expected and actual_sha256 and expected != actual_sha256:
        spec = manifest["base_model"].get("spec")
        raise UserError(
            f"base model '{where}' has sha256 {actual_sha256[:12]}..., but this rung was trained on '{spec}' with "
            f"sha256 {expected[:12]}...: its weights would be applied to the wrong base. Pass the original base "
            "(adaptlab.load(..., base=PATH)), or ship the merged model (adaptlab export --merge)."
        )
