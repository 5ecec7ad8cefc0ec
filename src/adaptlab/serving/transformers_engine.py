"""The plain transformers + peft engine: one base model in memory, adapters switched per batch.

- Encoder base (BERT, MiniLM, ...): loaded as a sequence classifier. peft classification adapters (LoRA) are
  loaded next to each other with ``load_adapter`` and picked with ``set_adapter``; each keeps its own classifier
  (peft ``modules_to_save``), whatever its number of labels. Embedding-head rungs (zero-shot, few-shot, linear
  probe) score the base's pooled sentence embeddings with adapters disabled. ``"base"`` classifies zero-shot
  against label descriptions sent with the request (or with the base's own head, if it has a trained one).
- Decoder base (Llama, GPT-2, SmolLM2, ...): loaded as a causal LM; ``"base"`` is the bare model with adapters
  disabled. Generation is a batched KV-cache decode loop that streams text per step.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptlab.errors import UserError
from adaptlab.generation.lm import eos_ids
from adaptlab.methods._heads import HEAD_FILE, pool, pooling_of, sentence_pooling
from adaptlab.serving.adapters import AdapterSpec
from adaptlab.serving.engine import (
    BASE,
    AdapterInfo,
    Classification,
    ClassifyItem,
    EngineError,
    GenerationChunk,
    GenerationParams,
)

ZERO_SHOT_TEMPERATURE = 0.05  # as the embedding_zero_shot rung's default


def default_threads() -> int:
    """Torch threads for serving: one core is left to the HTTP event loop (and to whatever else runs here).

    More intra-op threads than free cores make every matrix product wait at OpenMP barriers: on 2 shared cores a
    MiniLM forward took 880 ms with 2 threads and 11 ms with 1.
    """
    import os

    return max(1, (os.cpu_count() or 2) - 1)
LABEL_CACHE = 256


def base_kind(config: Any) -> str:
    """``"causal"`` for decoder LMs, ``"encoder"`` otherwise (by the architectures the config names)."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") or (a.endswith("LMHeadModel") and "Masked" not in a) for a in archs):
        return "causal"
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(f"base model {archs}: encoder-decoder models are not served yet; use an encoder or decoder.")
    return "encoder"


class TransformersEngine:
    """See the module docstring. ``base`` is a model spec (folder, packaged name, tiny-random-*, hub id)."""

    def __init__(self, base: str, *, device: str = "auto", max_length: int = 512, allow_pickle: bool = False,
                 trust_remote_code: bool = False, threads: int | None = None):
        from transformers import AutoConfig, AutoTokenizer

        from adaptlab.models import load_kwargs, resolve_model

        if threads:
            torch.set_num_threads(threads)

        self.base_name = base
        self.resolved = resolve_model(base, allow_pickle=allow_pickle)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.max_length = max_length
        kwargs = load_kwargs(self.resolved, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(self.resolved.location, **{k: v for k, v in kwargs.items()
                                                                        if k != "use_safetensors"})
        self.kind = base_kind(config)
        self.tokenizer = AutoTokenizer.from_pretrained(self.resolved.location, trust_remote_code=trust_remote_code,
                                                       **({"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs
                                                          else {}))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = self._load_base(kwargs)
        self.model.eval()
        self.peft_loaded = False
        self.specs: dict[str, AdapterSpec] = {}
        self.heads: dict[str, Any] = {}  # embedding-head adapters: method objects with .scores(embeddings)
        self.pooling = sentence_pooling(Path(self.resolved.path)) if self.resolved.is_local else "mean"
        self._label_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.RLock()  # the worker is single-threaded; this guards direct (test) use

    # -- loading -------------------------------------------------------------------------------------------------
    def _load_base(self, kwargs: dict) -> Any:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        if self.kind == "causal":
            self.tokenizer.padding_side = "left"
            with _quiet_transformers():
                return AutoModelForCausalLM.from_pretrained(self.resolved.location, **kwargs).to(self.device)
        if self.resolved.is_local and (Path(self.resolved.path) / HEAD_FILE).is_file():
            raise UserError(f"base '{self.base_name}' is a merged model with adaptlab's own classification head "
                            "(head: cls/mean), which this engine cannot share between adapters; load it with "
                            "adaptlab.load, or serve a rung trained with head: pooler.")
        with _quiet_transformers():  # a bare encoder has no classifier: its newly initialised one is never used
            model = AutoModelForSequenceClassification.from_pretrained(self.resolved.location, **kwargs)
        model = model.to(self.device)
        archs = getattr(model.config, "architectures", None) or []
        self.base_head = any(a.endswith("ForSequenceClassification") for a in archs)
        return model

    def adapters(self) -> list[AdapterInfo]:
        base = AdapterInfo(name=BASE, task="generation" if self.kind == "causal" else "classification", kind="base",
                           source=self.base_name, base_sha256=self.resolved.sha256,
                           labels=self._base_labels())
        return [base, *(self._info(s) for s in self.specs.values())]

    def _base_labels(self) -> list[str]:
        if self.kind == "encoder" and self.base_head:
            return [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        return []

    def _info(self, spec: AdapterSpec) -> AdapterInfo:
        return AdapterInfo(name=spec.name, task=spec.task, kind=spec.kind, method=spec.method, labels=spec.labels,
                           label_descriptions=spec.label_descriptions, source=str(spec.path),
                           base_sha256=spec.base_sha256, metrics=spec.metrics, text_pair=spec.text_pair)

    def load_adapter(self, spec: AdapterSpec) -> AdapterInfo:
        with self._lock:
            if spec.name in self.specs:
                raise EngineError(f"adapter '{spec.name}' is already loaded; unload it first.", 409, "adapter_exists")
            self._check_compatible(spec)
            if spec.kind == "head":
                self.heads[spec.name] = _load_head(spec, self.device)
            else:
                self._load_peft(spec)
            self.specs[spec.name] = spec
            return self._info(spec)

    def _check_compatible(self, spec: AdapterSpec) -> None:
        if spec.base_sha256 and self.resolved.sha256 and spec.base_sha256 != self.resolved.sha256:
            raise EngineError(
                f"adapter '{spec.name}' was trained on base '{spec.base_spec}' (sha256 {spec.base_sha256[:12]}...), "
                f"but this server's base is '{self.base_name}' (sha256 {self.resolved.sha256[:12]}...).",
                409, "base_mismatch")
        wanted = "generation" if self.kind == "causal" else "classification"
        if spec.task != wanted:
            raise EngineError(f"adapter '{spec.name}' is a {spec.task} adapter; this server's base "
                              f"'{self.base_name}' serves {wanted}.", 409, "task_mismatch")

    def _load_peft(self, spec: AdapterSpec) -> None:
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(str(spec.weights))
        if getattr(config, "is_prompt_learning", False):
            raise EngineError(f"adapter '{spec.name}': prompt-learning adapters ({config.peft_type}) are not served "
                              "by the transformers engine yet.", 422, "unsupported_adapter")
        shapes = _saved_shapes(spec.weights)
        loaded = {s.method for s in self.specs.values() if s.kind == "peft"}
        with self._head_shapes(config, shapes), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations peft triggers
            try:
                if not self.peft_loaded:
                    self.model = PeftModel.from_pretrained(self.model, str(spec.weights), adapter_name=spec.name)
                    self.peft_loaded = True
                else:
                    self.model.load_adapter(str(spec.weights), adapter_name=spec.name)
            except (ValueError, KeyError, RuntimeError) as e:  # e.g. peft refuses to mix adapter types
                raise EngineError(f"adapter '{spec.name}' ({config.peft_type}) can't be loaded next to the adapters "
                                  f"already loaded ({', '.join(sorted(map(str, loaded))) or 'none'}): {e}", 422,
                                  "unsupported_adapter") from None
        self.model.to(self.device).eval()
        if spec.task == "classification" and not spec.labels:
            heads = ("classifier.weight", "score.weight")
            n = next((s[0] for k, s in shapes.items() if k.endswith(heads)), 0)
            spec.labels = [f"LABEL_{i}" for i in range(n)]

    @contextlib.contextmanager
    def _head_shapes(self, config: Any, shapes: dict[str, tuple[int, ...]]) -> Iterator[None]:
        """Let an adapter's own head (peft modules_to_save) have its own number of labels.

        peft copies the base's head for each adapter and loads the saved one into it, so the copy must have the
        saved shapes: the module it copies from is swapped for a resized one while loading, then put back.
        """
        from peft.utils import ModulesToSaveWrapper

        names = [n for n in (config.modules_to_save or []) if isinstance(n, str)]
        swapped: list[tuple[Any, str, Any]] = []
        root = self.model.get_base_model() if self.peft_loaded else self.model
        for path, module in list(root.named_modules()):
            leaf = path.rsplit(".", 1)[-1]
            if leaf not in names:
                continue
            if isinstance(module, ModulesToSaveWrapper):
                resized = _resized(module.original_module, path, shapes)
                if resized is not module.original_module:
                    swapped.append((module, "original_module", module.original_module))
                    module.original_module = resized
            else:
                resized = _resized(module, path, shapes)
                if resized is not module:
                    parent = root.get_submodule(path.rsplit(".", 1)[0]) if "." in path else root
                    swapped.append((parent, leaf, module))
                    setattr(parent, leaf, resized)
        try:
            yield
        finally:
            for owner, attr, original in swapped:
                current = getattr(owner, attr)
                if isinstance(current, ModulesToSaveWrapper):  # wrapped just now: restore what it wraps
                    current.original_module = original
                else:
                    setattr(owner, attr, original)

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            spec = self.specs.pop(name, None)
            if spec is None:
                raise EngineError(f"adapter '{name}' is not loaded.", 404, "model_not_found")
            if spec.kind == "head":
                self.heads.pop(name, None)
            elif any(s.kind == "peft" for s in self.specs.values()):
                self.model.delete_adapter(name)
            else:
                self._unwrap()

    def _unwrap(self) -> None:
        """Back to the bare base model once the last peft adapter is gone (peft needs at least one adapter)."""
        from peft.utils import ModulesToSaveWrapper

        root = self.model.get_base_model()
        originals = [(n, m.original_module) for n, m in root.named_modules() if isinstance(m, ModulesToSaveWrapper)]
        base = self.model.unload()
        for path, original in originals:
            parent, _, leaf = path.rpartition(".")
            setattr(base.get_submodule(parent) if parent else base, leaf, original)
        self.model = base.eval()
        self.peft_loaded = False

    # -- classification ----------------------------------------------------------------------------------------
    def classify(self, adapter: str, batch: list[ClassifyItem]) -> list[Classification]:
        with self._lock:
            if self.kind != "encoder":
                raise EngineError(f"model '{adapter}' generates text; use /v1/completions or /v1/chat/completions.")
            if adapter == BASE:
                return self._classify_base(batch)
            spec = self.specs[adapter]
            if spec.task != "classification":
                raise EngineError(f"model '{adapter}' is a {spec.task} adapter; it can't classify.")
            max_length = spec.max_length or self.max_length
            if spec.kind == "head":
                with self._adapters_disabled():
                    emb = self._embed(batch, max_length)
                probs = np.asarray(self.heads[adapter].scores(emb), dtype=np.float64)
            else:
                self.model.set_adapter(adapter)
                head = spec.params.get("head", "pooler")
                logits = self._logits(batch, max_length) if head == "pooler" else self._pooled_logits(
                    batch, max_length, pooling_of(Path(self.resolved.path), head))
                probs = _softmax(logits)
            return [_classification(row, spec.labels) for row in probs]

    def _classify_base(self, batch: list[ClassifyItem]) -> list[Classification]:
        if self.base_head and all(item.labels is None for item in batch):
            with self._adapters_disabled():
                probs = _softmax(self._logits(batch, self.max_length))
            return [_classification(row, self._base_labels()) for row in probs]
        if any(not item.labels for item in batch):
            raise EngineError("model 'base' has no trained classification head: send \"labels\" (a list of label "
                              "names, or {name: description}) to classify zero-shot by embedding similarity.", 400,
                              "labels_required")
        with self._adapters_disabled():
            emb = self._embed(batch, self.max_length)
            out = []
            for row, item in zip(emb, batch):
                names = list(item.labels)
                label_emb = np.stack([self._label_embedding(item.labels[n]) for n in names])
                out.append(_classification(_softmax((label_emb @ row / ZERO_SHOT_TEMPERATURE)[None])[0], names))
        return out

    def _label_embedding(self, description: str) -> np.ndarray:
        key = (description, self.max_length)
        if key not in self._label_cache:
            self._label_cache[key] = self._embed([ClassifyItem(description)], self.max_length)[0]
            if len(self._label_cache) > LABEL_CACHE:
                self._label_cache.popitem(last=False)
        return self._label_cache[key]

    def _adapters_disabled(self) -> contextlib.AbstractContextManager:
        return self.model.disable_adapter() if self.peft_loaded else contextlib.nullcontext()

    def _encode(self, batch: list[ClassifyItem], max_length: int, join_pairs: bool = False) -> dict:
        texts = [i.text for i in batch]
        pairs = [i.pair or "" for i in batch] if any(i.pair is not None for i in batch) else None
        if join_pairs and pairs is not None:  # as the embedding rungs join a text pair
            sep = self.tokenizer.sep_token or "\n"
            texts = [f"{a} {sep} {b}" if i.pair is not None else a for a, b, i in zip(texts, pairs, batch)]
            pairs = None
        if pairs is not None and any(i.pair is None for i in batch):
            # Single texts and pairs in one batch: each encoded as it would be alone (a single text must not get
            # an empty second segment), then padded together.
            features = [self.tokenizer(t, i.pair, truncation=True, max_length=max_length)
                        for t, i in zip(texts, batch)]
            enc = self.tokenizer.pad(features, padding=True, return_tensors="pt")
        else:
            enc = self.tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True,
                                 return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.inference_mode()
    def _logits(self, batch: list[ClassifyItem], max_length: int) -> np.ndarray:
        return self.model(**self._encode(batch, max_length)).logits.float().cpu().numpy()

    @torch.inference_mode()
    def _pooled_logits(self, batch: list[ClassifyItem], max_length: int, pooling: str) -> np.ndarray:
        """An adapter trained with adaptlab's own head (cls/mean pooling into ``classifier``): its weights have the
        transformers classifier's names, so it loads on this base; only the pooling differs, so it is done here."""
        root = self.model.get_base_model()
        enc = self._encode(batch, max_length)
        states = getattr(root, root.base_model_prefix)(**enc).last_hidden_state
        return root.classifier(pool(states, enc.get("attention_mask"), pooling)).float().cpu().numpy()

    @torch.inference_mode()
    def _embed(self, batch: list[ClassifyItem], max_length: int) -> np.ndarray:
        """L2-normalised pooled sentence embeddings of the base body (as sentence-transformers computes them)."""
        enc = self._encode(batch, max_length, join_pairs=True)
        root = self.model.get_base_model() if self.peft_loaded else self.model
        body = root.base_model
        hidden = body(**{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")},
                      ).last_hidden_state.float()
        pooled = torch.nn.functional.normalize(pool(hidden, enc["attention_mask"], self.pooling), p=2, dim=1)
        return pooled.cpu().numpy().astype(np.float32)

    # -- generation --------------------------------------------------------------------------------------------
    def chat_prompt(self, adapter: str, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        turns = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return turns + "assistant:"

    def generate(self, adapter: str, prompts: list[str],
                 params: list[GenerationParams]) -> Iterator[list[GenerationChunk]]:
        if self.kind != "causal":
            raise EngineError(f"model '{adapter}' classifies; this server's base '{self.base_name}' can't generate. "
                              "Use /v1/classify.")
        if adapter != BASE:
            spec = self.specs[adapter]
            if spec.task != "generation":
                raise EngineError(f"model '{adapter}' is a {spec.task} adapter; it can't generate.")
        return self._generate(adapter, prompts, params)

    def _generate(self, adapter: str, prompts: list[str],
                  params: list[GenerationParams]) -> Iterator[list[GenerationChunk]]:
        with self._lock, (self._adapters_disabled() if adapter == BASE else contextlib.nullcontext()):
            if adapter != BASE:
                self.model.set_adapter(adapter)
            yield from DecodeLoop(self.model, self.tokenizer, prompts, params, self.device, self.max_length).run()


class DecodeLoop:
    """Batched sampling with a KV cache, left padding, per-prompt limits, and text streamed per step."""

    def __init__(self, model: Any, tokenizer: Any, prompts: list[str], params: list[GenerationParams], device: str,
                 max_length: int):
        self.model, self.tokenizer, self.params, self.device = model, tokenizer, params, device
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 2048)
        self.limit = int(limit)
        longest = max(p.max_tokens for p in params)
        self.enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True,
                             max_length=max(1, min(max_length, self.limit - longest)))
        self.eos = eos_ids(model, tokenizer)
        self.generators = [_rng(p.seed, device) for p in params]

    @torch.inference_mode()
    def run(self) -> Iterator[list[GenerationChunk]]:
        n = len(self.params)
        ids = self.enc["input_ids"].to(self.device)
        mask = self.enc["attention_mask"].to(self.device)
        prompt_tokens = mask.sum(1).tolist()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generated: list[list[int]] = [[] for _ in range(n)]
        texts = [""] * n
        done = [False] * n
        past = None
        step_ids, step_pos = ids, positions
        for _step in range(max(p.max_tokens for p in self.params)):
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, past_key_values=past,
                             use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_ids = [self._sample(logits[i], i) for i in range(n)]
            chunks = []
            for i, token in enumerate(next_ids):
                if done[i]:
                    continue
                finish = None
                if token in self.eos:
                    finish = "stop"
                else:
                    generated[i].append(token)
                text = self.tokenizer.decode(generated[i], skip_special_tokens=True)
                stop_at = _first_stop(text, self.params[i].stop)
                if stop_at is not None:
                    text, finish = text[:stop_at], "stop"
                elif finish is None and (len(generated[i]) >= self.params[i].max_tokens
                                         or prompt_tokens[i] + len(generated[i]) >= self.limit):
                    finish = "length"
                if finish is None and text.endswith("\ufffd"):
                    continue  # half a multi-byte character: wait for the rest
                delta = text[len(texts[i]):] if text.startswith(texts[i]) else text
                texts[i] = text
                if delta or finish:
                    chunks.append(GenerationChunk(i, delta, finish, prompt_tokens[i], len(generated[i])))
                done[i] = finish is not None
            if chunks:
                yield chunks
            if all(done):
                return
            step_ids = torch.tensor([[t] for t in next_ids], device=self.device)
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=self.device)], dim=1)
            step_pos = step_pos[:, -1:] + 1

    def _sample(self, logits: torch.Tensor, i: int) -> int:
        p = self.params[i]
        if p.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = sorted_probs.cumsum(0) - sorted_probs < p.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=self.generators[i]))


# -- helpers ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load report or progress bar while loading the base (its missing classifier is expected)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _rng(seed: int | None, device: str) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [text.find(s) for s in stops if s and s in text]
    return min(found) if found else None


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _classification(row: np.ndarray, labels: list[str]) -> Classification:
    scores = {name: round(float(p), 6) for name, p in zip(labels, row)}
    return Classification(labels[int(np.argmax(row))], scores)


def _saved_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors in a peft adapter's safetensors, keyed by module path in the base model."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                shapes[key.removeprefix("base_model.model.")] = tuple(f.get_slice(key).get_shape())
    return shapes


def _resized(module: Any, path: str, shapes: dict[str, tuple[int, ...]]) -> Any:
    """A copy of ``module`` whose Linear layers have the shapes saved for ``path``; ``module`` if they already do."""
    changes = {}
    for sub, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear):
            saved = shapes.get(f"{path}.{sub}.weight" if sub else f"{path}.weight")
            if saved is not None and tuple(layer.weight.shape) != saved:
                changes[sub] = torch.nn.Linear(saved[1], saved[0], bias=layer.bias is not None)
    if not changes:
        return module
    if "" in changes:
        return changes[""]
    copied = copy.deepcopy(module)
    for sub, layer in changes.items():
        parent, _, leaf = sub.rpartition(".")
        setattr(copied.get_submodule(parent) if parent else copied, leaf, layer)
    return copied


def _load_head(spec: AdapterSpec, device: str) -> Any:
    """An embedding rung's head (zero-shot, few-shot, linear probe) as its method object, without an embedder."""
    from safetensors.torch import load_file

    from adaptlab.context import RunContext
    from adaptlab.methods import METHODS

    method_cls = METHODS.get(spec.method)
    method = method_cls(method_cls.Params.model_validate(spec.params), RunContext.from_dict(spec.context))
    method.head = {k: v.numpy() for k, v in load_file(str(spec.weights / method_cls.head_file)).items()}
    return method
