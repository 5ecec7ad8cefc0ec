"""The plain transformers + peft engine: one base model in memory, adapters switched per batch.

- Encoder base (BERT, MiniLM, ...): loaded as a sequence classifier. peft classification adapters (LoRA) are
  loaded next to each other with ``load_adapter`` and picked with ``set_adapter``; each keeps its own classifier
  (peft ``modules_to_save``), whatever its number of labels. Embedding-head rungs (zero-shot, few-shot, linear
  probe) score the base's pooled sentence embeddings with adapters disabled. ``"base"`` classifies zero-shot
  against label descriptions sent with the request (or with the base's own head, if it has a trained one).
- Token classification (NER) on the same encoder base: peft token adapters load next to the classification ones,
  each with its own per-token ``classifier``; their per-token logits are that classifier over the body's final
  states (what ``*ForTokenClassification`` computes), read and decoded by the ladder's own
  :class:`~adaptlab.tasks.token_classification.ship.TokenPredictor` (first sub-token of each word, BIO -> entities
  with character offsets). A merged tagger (``adaptlab export RUN --merge`` of a head_only/top_layers/full rung) is
  served as ``--base``: it is loaded as a token classifier, and ``"base"`` answers NER with its own head.
- Sentence embeddings (``/v1/embeddings``) on the same encoder base: ``"base"`` is the bare body pooled as its
  sentence-transformers config says; a LoRA embedding rung's adapter (saved from the body alone) is loaded next to
  the others with its keys placed under the body (``bert.``...), and embeds with its adapter switched on.
- Decoder base (Llama, GPT-2, SmolLM2, ...): loaded as a causal LM; ``"base"`` is the bare model with adapters
  disabled. Generation is a batched KV-cache decode loop that streams text per step. Everything it decides is
  decided as the ladder decides it (:mod:`adaptlab.generation`): the next token (greedy, temperature, top-k,
  top-p, repetition penalty, seeds), the end-of-sequence ids, stop strings and the visible text, and a chat's
  prompt (each adapter's rung's system prompt and chat template, truncated to the same budget).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jinja2 import TemplateError

from adaptlab.errors import UserError
from adaptlab.generation.decoding import eos_ids, left_pad, logits_processors, pick, seeded_generator, visible_text
from adaptlab.generation.formatting import Formatter, PromptStyle
from adaptlab.generation.lm import context_window, model_kind
from adaptlab.methods._heads import HEAD_FILE, pool, pooling_of, sentence_pooling
from adaptlab.methods._peft import is_prompt_learning
from adaptlab.runtime import kernels_for
from adaptlab.serving.adapters import AdapterSpec
from adaptlab.serving.engine import (
    BASE,
    ROUTES,
    AdapterInfo,
    Classification,
    ClassifyItem,
    Embedding,
    EngineError,
    GenerationChunk,
    GenerationParams,
    default_task,
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


def load_engine(base: str, specs: list[AdapterSpec], *, device: str = "auto",
                threads: int | None = None) -> TransformersEngine:
    """The engine ``adaptlab serve`` runs (in its own process, or in each replica): ``base`` with every adapter of
    ``specs`` loaded; UserError naming the ``--adapter`` that failed to load. A fp32 base on a CPU runs without oneDNN
    (:func:`adaptlab.runtime.kernels_for`)."""
    engine = TransformersEngine(base, device=device, threads=threads or default_threads())
    kernels_for(engine.device, next(engine.model.parameters()).dtype != torch.float32)  # see cpu_kernels
    for spec in specs:
        try:
            engine.load_adapter(spec)
        except EngineError as e:
            raise UserError(f"--adapter {spec.name}={spec.path}: {e}") from None
    return engine


def base_kind(config: Any) -> str:
    """``"causal"`` for decoder LMs, ``"encoder"`` otherwise (the ladder's :func:`~adaptlab.generation.lm.model_kind`;
    encoder-decoder models are refused)."""
    kind = model_kind(config)
    if kind == "seq2seq":
        archs = getattr(config, "architectures", None) or []
        raise UserError(f"base model {archs}: encoder-decoder models are not served yet; use an encoder or decoder.")
    return kind


@dataclass
class ChatPrompt:
    """A chat conversation to generate from, formatted in the worker, once the request's prompt budget is known."""

    messages: list[dict[str, str]]
    style: PromptStyle
    max_length: int


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
        #: What "base" is served as (its export kind): a decoder, a classifier, or a merged tagger.
        self.base_kind = "decoder" if self.kind == "causal" else "tagger" if _is_tagger(config) else "classifier"
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
        self.styles: dict[str, PromptStyle] = {}  # how each generation adapter's rung wrote its prompts
        self.pooling = sentence_pooling(Path(self.resolved.path)) if self.resolved.is_local else "mean"
        self._label_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.RLock()  # the worker is single-threaded; this guards direct (test) use

    # -- loading -------------------------------------------------------------------------------------------------
    def _load_base(self, kwargs: dict) -> Any:
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
        )

        self.base_head = False
        if self.kind == "causal":
            self.tokenizer.padding_side = "left"
            with _quiet_transformers():
                return AutoModelForCausalLM.from_pretrained(self.resolved.location, **kwargs).to(self.device)
        if self.resolved.is_local and (Path(self.resolved.path) / HEAD_FILE).is_file():
            raise UserError(f"base '{self.base_name}' is a merged model with adaptlab's own classification head "
                            "(head: cls/mean), which this engine cannot share between adapters; load it with "
                            "adaptlab.load, or serve a rung trained with head: pooler.")
        if self.base_kind == "tagger":
            return AutoModelForTokenClassification.from_pretrained(self.resolved.location, **kwargs).to(self.device)
        with _quiet_transformers():  # a bare encoder has no classifier: its newly initialised one is never used
            model = AutoModelForSequenceClassification.from_pretrained(self.resolved.location, **kwargs)
        model = model.to(self.device)
        archs = getattr(model.config, "architectures", None) or []
        self.base_head = any(a.endswith("ForSequenceClassification") for a in archs)
        return model

    def adapters(self) -> list[AdapterInfo]:
        base = AdapterInfo(name=BASE, task=default_task(self.base_kind), kind="base", source=self.base_name,
                           base_sha256=self.resolved.sha256, labels=self._base_labels(), export_kind=self.base_kind)
        return [base, *(self._info(s) for s in self.specs.values())]

    def _base_labels(self) -> list[str]:
        if self.kind == "encoder" and (self.base_head or self.base_kind == "tagger"):
            config = self.model.config
            return [config.id2label[i] for i in range(config.num_labels)]
        return []

    def _info(self, spec: AdapterSpec) -> AdapterInfo:
        return AdapterInfo(name=spec.name, task=spec.task, kind=spec.kind, method=spec.method, labels=spec.labels,
                           label_descriptions=spec.label_descriptions, source=str(spec.path),
                           base_sha256=spec.base_sha256, metrics=spec.metrics, text_pair=spec.text_pair,
                           export_kind=spec.export_kind)

    def load_adapter(self, spec: AdapterSpec) -> AdapterInfo:
        with self._lock:
            if spec.name in self.specs:
                raise EngineError(f"adapter '{spec.name}' is already loaded; unload it first.", 409, "adapter_exists")
            self._check_compatible(spec)
            if spec.kind == "head":
                self.heads[spec.name] = _load_head(spec, self.device)
            else:
                style = self._prompt_style(spec) if spec.export_kind == "decoder" else None
                self._load_peft(spec)
                if style is not None:
                    self.styles[spec.name] = style
            self.specs[spec.name] = spec
            return self._info(spec)

    def _check_compatible(self, spec: AdapterSpec) -> None:
        if spec.base_sha256 and self.resolved.sha256 and spec.base_sha256 != self.resolved.sha256:
            raise EngineError(
                f"adapter '{spec.name}' was trained on base '{spec.base_spec}' (sha256 {spec.base_sha256[:12]}...), "
                f"but this server's base is '{self.base_name}' (sha256 {self.resolved.sha256[:12]}...).",
                409, "base_mismatch")
        wanted = {"decoder": ("decoder",), "classifier": ("classifier", "tagger", "embedder"), "tagger": ("tagger",)}
        served = wanted[self.base_kind]
        if spec.export_kind not in served:
            tasks = " and ".join(default_task(k) for k in served)
            raise EngineError(f"adapter '{spec.name}' is a {spec.task} adapter; this server's base "
                              f"'{self.base_name}' serves {tasks}.", 409, "task_mismatch")
        if spec.export_kind == "embedder" and spec.kind != "peft":
            raise EngineError(f"adapter '{spec.name}': only LoRA embedding rungs (params.lora: true) are served next "
                              "to others; serve a fully trained one as the base (--base RUN/weights/model).", 422,
                              "unsupported_adapter")
        if spec.export_kind == "tagger":
            if spec.kind != "peft":
                raise EngineError(f"adapter '{spec.name}': only peft token-classification adapters are served next to "
                                  "others.", 422, "unsupported_adapter")
            if not self.tokenizer.is_fast:
                raise EngineError(f"adapter '{spec.name}': token classification needs a fast (Rust) tokenizer to map "
                                  f"sub-tokens to words; the base '{self.base_name}' has a slow one.", 422,
                                  "unsupported_adapter")
            if not spec.labels:
                raise EngineError(f"adapter '{spec.name}' does not say its tag names (O, B-..., I-...); serve its run "
                                  "folder or exported bundle.", 422, "unsupported_adapter")

    def _load_peft(self, spec: AdapterSpec) -> None:
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(str(spec.weights))
        if is_prompt_learning(config):
            raise EngineError(f"adapter '{spec.name}': prompt-learning adapters ({config.peft_type}) are not served "
                              "by the transformers engine yet.", 422, "unsupported_adapter")
        shapes = _saved_shapes(spec.weights)
        loaded = {s.method for s in self.specs.values() if s.kind == "peft"}
        with self._head_shapes(config, shapes), warnings.catch_warnings(), self._peft_folder(spec) as folder:
            warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations peft triggers
            try:
                if not self.peft_loaded:
                    self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=spec.name)
                    self.peft_loaded = True
                else:
                    self.model.load_adapter(str(folder), adapter_name=spec.name)
            except Exception as e:
                self._forget_failed(spec.name)  # peft puts an adapter's layers in before it loads their weights
                if not isinstance(e, (ValueError, KeyError, RuntimeError)):  # e.g. mixed adapter types, wrong shapes
                    raise
                raise EngineError(f"adapter '{spec.name}' ({config.peft_type}) can't be loaded next to the adapters "
                                  f"already loaded ({', '.join(sorted(map(str, loaded))) or 'none'}): {e}", 422,
                                  "unsupported_adapter") from None
        self.model.to(self.device).eval()
        if spec.export_kind == "classifier" and not spec.labels:
            heads = ("classifier.weight", "score.weight")
            n = next((s[0] for k, s in shapes.items() if k.endswith(heads)), 0)
            spec.labels = [f"LABEL_{i}" for i in range(n)]

    def _forget_failed(self, name: str) -> None:
        """Take out what a failed load of adapter ``name`` put into the model, so the base and the other adapters
        answer as before and the name can be loaded again."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils import ModulesToSaveWrapper

        if self.peft_loaded:
            if name in self.model.peft_config:
                self.model.delete_adapter(name)
            return
        for path, module in list(self.model.named_modules()):  # the bare base: its layers back as they were
            if isinstance(module, (BaseTunerLayer, ModulesToSaveWrapper)):
                parent, _, leaf = path.rpartition(".")
                original = module.original_module if isinstance(module, ModulesToSaveWrapper) else \
                    module.get_base_layer()
                setattr(self.model.get_submodule(parent) if parent else self.model, leaf, original)
        if "peft_config" in vars(self.model):
            del self.model.peft_config

    @contextlib.contextmanager
    def _peft_folder(self, spec: AdapterSpec) -> Iterator[Path]:
        """The adapter folder peft loads: as saved, except an embedding adapter, which was saved from the encoder
        body alone (keys ``base_model.model.encoder...``): a copy with its keys under the body's attribute of this
        base (``base_model.model.bert.encoder...``), or peft would match none of them."""
        import shutil
        import tempfile

        from safetensors.torch import load_file, save_file

        if spec.export_kind != "embedder":
            yield spec.weights
            return
        root = self.model.get_base_model() if self.peft_loaded else self.model
        body, lead = root.base_model_prefix, "base_model.model."
        with tempfile.TemporaryDirectory(prefix="adaptlab-embedder-") as tmp:
            folder = Path(tmp)
            try:
                shutil.copy(spec.weights / "adapter_config.json", folder / "adapter_config.json")
                state = load_file(str(spec.weights / "adapter_model.safetensors"))
            except Exception as e:  # missing, unreadable or not safetensors (OSError, SafetensorError)
                raise EngineError(f"adapter '{spec.name}': {spec.weights} holds no readable adapter_model.safetensors "
                                  f"({type(e).__name__}: {e}); re-run or re-export the rung.", 422,
                                  "unsupported_adapter") from None
            placed = {(f"{lead}{body}.{k[len(lead):]}" if k.startswith(lead) and not k.startswith(f"{lead}{body}.")
                       else k): v for k, v in state.items()}
            save_file(placed, str(folder / "adapter_model.safetensors"))
            yield folder

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
            self.styles.pop(name, None)
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
            spec = self._spec(adapter, "classifier")
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

    def _spec(self, adapter: str, kind: str) -> AdapterSpec:
        """The loaded adapter ``adapter``, which must be served as ``kind`` (EngineError naming its route if not)."""
        spec = self.specs.get(adapter)
        if spec is None:
            raise EngineError(f"adapter '{adapter}' is not loaded.", 404, "model_not_found")
        if spec.export_kind != kind:
            raise EngineError(f"model '{adapter}' is a {spec.task} adapter; it is served on "
                              f"{ROUTES.get(spec.export_kind or '', 'no route')}, not {ROUTES[kind]}.", 400,
                              "wrong_endpoint")
        return spec

    def _classify_base(self, batch: list[ClassifyItem]) -> list[Classification]:
        if self.base_kind != "classifier":
            raise EngineError(f"model 'base' is a {default_task(self.base_kind)} model; it is served on "
                              f"{ROUTES[self.base_kind]}, not /v1/classify.", 400, "wrong_endpoint")
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
    def _embed(self, batch: list[ClassifyItem], max_length: int, with_tokens: bool = False) -> Any:
        """L2-normalised pooled sentence embeddings of the base body (as sentence-transformers computes them); with
        ``with_tokens`` also each text's token count."""
        enc = self._encode(batch, max_length, join_pairs=True)
        root = self.model.get_base_model() if self.peft_loaded else self.model
        body = root.base_model
        hidden = body(**{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")},
                      ).last_hidden_state.float()
        pooled = torch.nn.functional.normalize(pool(hidden, enc["attention_mask"], self.pooling), p=2, dim=1)
        vectors = pooled.cpu().numpy().astype(np.float32)
        if not with_tokens:
            return vectors
        return vectors, enc["attention_mask"].sum(dim=1).cpu().numpy()

    # -- sentence embeddings -------------------------------------------------------------------------------------
    def embed(self, adapter: str, texts: list[str]) -> list[Embedding]:
        """Per text, its normalised embedding: the bare body for ``"base"``, else the embedding adapter switched on."""
        with self._lock:
            if self.kind != "encoder":
                raise EngineError(f"model '{adapter}' generates text; embeddings come from an encoder base.", 400,
                                  "wrong_endpoint")
            batch = [ClassifyItem(t) for t in texts]
            if adapter == BASE:
                with self._adapters_disabled():
                    vectors, tokens = self._embed(batch, self.max_length, with_tokens=True)
            else:
                spec = self._spec(adapter, "embedder")
                self.model.set_adapter(adapter)
                vectors, tokens = self._embed(batch, spec.max_length or self.max_length, with_tokens=True)
            return [Embedding(v.tolist(), int(n)) for v, n in zip(vectors, tokens)]

    # -- token classification (NER) ---------------------------------------------------------------------------
    def ner(self, adapter: str, texts: list[str]) -> list[list[dict[str, Any]]]:
        """Per text, its entities with character offsets, as the ladder's TokenPredictor decodes them."""
        from adaptlab.tasks.token_classification.ship import TokenPredictor

        with self._lock:
            if self.kind != "encoder":
                raise EngineError(f"model '{adapter}' generates text; this server's base '{self.base_name}' can't "
                                  "tag entities. Use /v1/completions or /v1/chat/completions.")
            if adapter == BASE:
                if self.base_kind != "tagger":
                    raise EngineError(f"model 'base' is a {default_task(self.base_kind)} model; it is served on "
                                      f"{ROUTES[self.base_kind]}, not /v1/ner.", 400, "wrong_endpoint")
                labels, max_length = self._base_labels(), self.max_length
            else:
                spec = self._spec(adapter, "tagger")
                labels, max_length = spec.labels, spec.max_length or self.max_length
            with self._adapters_disabled() if adapter == BASE else contextlib.nullcontext():
                if adapter != BASE:
                    self.model.set_adapter(adapter)
                predictor = TokenPredictor(self._token_logits, self.tokenizer, labels, max_length, "served")
                return [found["entities"] for found in predictor.predict(texts)]

    @torch.inference_mode()
    def _token_logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Per-sub-token logits of the active adapter (TokenPredictor's backend). A tagger base runs its own
        forward; on a classifier base, the adapter's token ``classifier`` is applied to the body's final states,
        as ``*ForTokenClassification`` does (its dropout is a no-op in eval)."""
        enc = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        if self.base_kind == "tagger":
            return self.model(**enc).logits.float().cpu().numpy()
        root = self.model.get_base_model() if self.peft_loaded else self.model
        states = getattr(root, root.base_model_prefix)(**enc).last_hidden_state
        return root.classifier(states).float().cpu().numpy()

    # -- generation --------------------------------------------------------------------------------------------
    def _prompt_style(self, spec: AdapterSpec | None) -> PromptStyle:
        """The prompt style of the rung that trained ``spec`` (its task's template, system prompt and chat template
        setting); the defaults of a generation task for the bare base and for peft folders without a run."""
        from adaptlab.config import TaskSpec
        from adaptlab.context import RunContext
        from adaptlab.generation.formatting import resolve_style
        from adaptlab.methods._causal import task_spec

        context = spec.context if spec is not None else {}
        task = task_spec(RunContext.from_dict(context)) if context else TaskSpec(type="generation")
        try:
            return resolve_style(task, self.tokenizer, "causal")
        except UserError as e:
            raise EngineError(f"adapter '{spec.name if spec else BASE}': {e}", 422, "unsupported_adapter") from None

    def chat_prompt(self, adapter: str, messages: list[dict[str, str]]) -> ChatPrompt | str:
        """The conversation as the adapter's rung formatted its prompts (its system prompt unless the messages
        bring one, its chat template); a plain ``role: content`` transcript where the rung used no chat template.
        The template is rendered once here, so a conversation it can't render fails its own request."""
        spec = self.specs.get(adapter)
        style = self.styles.get(adapter) or self._prompt_style(None)
        if not style.chat:
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        max_length = (spec.max_length if spec is not None else None) or self.max_length
        try:
            Formatter(self.tokenizer, style, "causal", max_length).prompt_text(messages)
        except (TemplateError, UserError) as e:  # e.g. a template that takes no system role, or alternating roles
            raise EngineError(f"model '{adapter}': its chat template refused these messages: {e}", 400,
                              "invalid_messages") from None
        return ChatPrompt(list(messages), style, max_length)

    def generate(self, adapter: str, prompts: list[str | ChatPrompt],
                 params: list[GenerationParams]) -> Iterator[list[GenerationChunk]]:
        if self.kind != "causal":
            raise EngineError(f"model '{adapter}' classifies; this server's base '{self.base_name}' can't generate. "
                              "Use /v1/classify.")
        if adapter != BASE:
            self._spec(adapter, "decoder")
        return self._generate(adapter, prompts, params)

    def _generate(self, adapter: str, prompts: list[str | ChatPrompt],
                  params: list[GenerationParams]) -> Iterator[list[GenerationChunk]]:
        with self._lock, (self._adapters_disabled() if adapter == BASE else contextlib.nullcontext()):
            if adapter != BASE:
                self.model.set_adapter(adapter)
            window = context_window(self.model.config, self.tokenizer) or 2048
            ids = [self._prompt_ids(p, q.max_tokens, window) for p, q in zip(prompts, params)]
            yield from DecodeLoop(self.model, self.tokenizer, ids, params, self.device, window).run()

    def _prompt_ids(self, prompt: str | ChatPrompt, max_tokens: int, window: int) -> list[int]:
        """Token ids of one prompt, leaving room for its own ``max_tokens`` in the context ``window``: a chat through
        the ladder's formatter (which drops the oldest turns first, as it does for the rung's own prompts); a text
        whole, or a 400 naming its length and the limit (a text is never cut silently)."""
        budget = window - max_tokens
        if budget < 1:
            raise EngineError(f"max_tokens={max_tokens} leaves no room for the prompt in the model's {window}-token "
                              "context window; ask for fewer.", 400, "context_length_exceeded")
        if isinstance(prompt, ChatPrompt):
            limit = min(prompt.max_length, budget)
            try:
                return Formatter(self.tokenizer, prompt.style, "causal", limit).encode(prompt.messages).prompt_ids
            except TemplateError as e:  # the newest turns alone, as the template refuses them (say, not alternating)
                raise EngineError(f"the conversation is cut to its newest turns to fit {limit} tokens, and the chat "
                                  f"template refuses what is left: {e}; send a shorter conversation.", 400,
                                  "invalid_messages") from None
            except UserError:
                raise EngineError(f"the conversation does not fit in {limit} tokens even cut to its last message "
                                  f"(its system prompt and chat markup alone are too long with max_tokens="
                                  f"{max_tokens}); send a shorter system prompt or ask for fewer tokens.", 400,
                                  "context_length_exceeded") from None
        ids = list(self.tokenizer(prompt)["input_ids"])
        limit = min(self.max_length, budget)
        if not ids:
            raise EngineError("the prompt is empty (it encodes to no tokens); send some text.", 400, "invalid_input")
        if len(ids) > limit:
            raise EngineError(f"the prompt is {len(ids)} tokens; with max_tokens={max_tokens} this server takes at "
                              f"most {limit} (the model's context window is {window} tokens, the server reads "
                              f"prompts of at most {self.max_length}); send a shorter prompt or ask for fewer "
                              "tokens.", 400, "context_length_exceeded")
        return ids


class DecodeLoop:
    """Batched decoding with a KV cache and left padding, text streamed per step, settings per prompt.

    What is decided is decided by :mod:`adaptlab.generation.decoding`, as for the ladder's predictions: the next
    token (:func:`logits_processors` then :func:`pick`, each seeded prompt with a generator of its own), the tokens
    that end a sequence (:func:`eos_ids`) and the text shown, cut at a stop string (:func:`visible_text`).
    """

    def __init__(self, model: Any, tokenizer: Any, prompts: list[list[int]], params: list[GenerationParams],
                 device: str, limit: int):
        self.model, self.tokenizer, self.prompts, self.params = model, tokenizer, prompts, params
        self.device, self.limit = device, limit
        self.eos = set(eos_ids(model, tokenizer))
        self.processors = [logits_processors(p) for p in params]
        self.generators = [seeded_generator(p.seed, device) if p.do_sample else None for p in params]
        self.generated: list[list[int]] = [[] for _ in prompts]
        self.texts = [""] * len(prompts)
        self.done = [False] * len(prompts)

    @torch.inference_mode()
    def run(self) -> Iterator[list[GenerationChunk]]:
        ids, mask = left_pad(self.prompts, self.tokenizer.pad_token_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        step_pos = (mask.cumsum(-1) - 1).clamp(min=0)
        past, step_ids = None, ids
        for _step in range(max(p.max_tokens for p in self.params)):
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, past_key_values=past,
                             use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_ids = [self._next(i, logits[i : i + 1]) for i in range(len(self.prompts))]
            chunks = [c for c in (self._advance(i, t) for i, t in enumerate(next_ids)) if c is not None]
            if chunks:
                yield chunks
            if all(self.done):
                return
            step_ids = torch.tensor([[t] for t in next_ids], device=self.device)
            mask = torch.cat([mask, torch.ones((len(next_ids), 1), dtype=mask.dtype, device=self.device)], dim=1)
            going = torch.tensor([[0 if d else 1] for d in self.done], device=self.device)
            step_pos = step_pos[:, -1:] + going  # a finished row stays put: its prompt's own room is all it has

    def _next(self, i: int, logits: torch.Tensor) -> int:
        """Prompt ``i``'s next token from its logits (shape [1, vocab]); padding once it is finished."""
        if self.done[i]:
            return int(self.tokenizer.pad_token_id)
        history = torch.tensor([self.prompts[i] + self.generated[i]], device=logits.device)
        scores = self.processors[i](history, logits)
        return int(pick(scores, self.params[i].do_sample, self.generators[i])[0, 0])

    def _advance(self, i: int, token: int) -> GenerationChunk | None:
        """Add ``token`` to prompt ``i``'s text; the chunk of new text (and finish reason) to stream, if any."""
        if self.done[i]:
            return None
        params, generated = self.params[i], self.generated[i]
        finish = "stop" if token in self.eos else None
        if finish is None:
            generated.append(token)
        text, stopped = visible_text(self.tokenizer, generated, params.stop)
        if stopped:
            finish = "stop"
        elif finish is None and (len(generated) >= params.max_tokens
                                 or len(self.prompts[i]) + len(generated) >= self.limit):
            finish = "length"
        if finish is None and text.endswith("\ufffd"):
            return None  # half a multi-byte character: wait for the rest
        delta = text[len(self.texts[i]):] if text.startswith(self.texts[i]) else text
        self.texts[i] = text
        self.done[i] = finish is not None
        if not delta and not finish:
            return None
        return GenerationChunk(i, delta, finish, len(self.prompts[i]), len(generated))


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
    if not (folder / "adapter_model.safetensors").is_file():  # peft would look for pickled weights, or the hub
        raise EngineError(f"{folder} holds no adapter_model.safetensors (adapters are served from safetensors only); "
                          "re-run or re-export the rung.", 422, "unsupported_adapter")
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt") as f:
                for key in f.keys():
                    shapes[key.removeprefix("base_model.model.")] = tuple(f.get_slice(key).get_shape())
        except Exception as e:  # unreadable, or not safetensors (SafetensorError)
            raise EngineError(f"{file} is no readable adapter_model.safetensors ({type(e).__name__}: {e}); re-run "
                              "or re-export the rung.", 422, "unsupported_adapter") from None
    return shapes


def _is_tagger(config: Any) -> bool:
    """Whether a model's config names a token-classification head (a merged tagger export)."""
    return any(a.endswith("ForTokenClassification") for a in getattr(config, "architectures", None) or [])


def _resized(module: Any, path: str, shapes: dict[str, tuple[int, ...]]) -> Any:
    """A copy of ``module`` whose Linear layers have the shapes saved for ``path``; ``module`` if they already do.

    A head saved as one Linear where the base has a deeper one (a token classifier over RoBERTa's two-layer
    sentence head) becomes that Linear."""
    saved = shapes.get(f"{path}.weight")
    if not isinstance(module, torch.nn.Linear) and saved is not None and len(saved) == 2:
        return torch.nn.Linear(saved[1], saved[0], bias=f"{path}.bias" in shapes)
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
