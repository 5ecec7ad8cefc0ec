"""Shared body of the generative rungs (causal LMs and seq2seq models).

A generative rung classifies by **constrained choice**: each label's answer (``task.label_words``, default the label)
is scored by the model's log-likelihood after the prompt (sum of the answer's token log-probabilities, end-of-turn
token included), and a softmax over the labels gives the probabilities. For the ``generation`` task it writes text
(:meth:`GenerativeMethod.generate`) and scores the references (:meth:`GenerativeMethod.reference_nll`).

Subclasses decide what trains (:meth:`adapt`), which in-context examples go into a prompt (:meth:`demos_for`) and
what they ship (:meth:`save`/:meth:`load`). Every rung also reports **forgetting**: its perplexity on a general
text (``task.forgetting_text``, Hamlet by default) next to the base model's, computed once per model and setting.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.generation import lm
from adaptlab.generation.decoding import finish_text, generate_ids
from adaptlab.generation.formatting import Demo, Encoded, Formatter, Input, resolve_style
from adaptlab.methods.base import Method, TorchModelAccounting
from adaptlab.tasks._settings import TaskSpec

PROMPT_FILE = "prompt.json"
#: Inputs without content, whose label probabilities measure a prompt's bias (contextual calibration).
CONTENT_FREE = ("N/A", "", "[MASK]")
Dtype = Literal["auto", "float32", "bfloat16"]

#: Base-model perplexity on the forgetting text, keyed by (model hash, kind, dtype, text, tokens, window, device):
#: computed by the first rung of a ladder that needs it, reused by every later one.
_BASE_PERPLEXITY: dict[tuple, float] = {}


class PromptParams(BaseModel):
    """Settings of rungs that only prompt the base model."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    dtype: Dtype = Field("auto", description="Weights dtype: auto (as stored: bf16 for smollm2), float32, bfloat16.")
    batch_size: int = Field(16, gt=0, description="Sequences scored per forward pass.")


class ChoiceParams(PromptParams):
    """Settings of prompting rungs that classify by constrained choice."""

    length_normalize: bool = Field(False, description="Constrained choice: mean instead of sum of the answer's "
                                   "token log-probabilities (for label words of very different lengths).")
    calibrate: bool = Field(False, description="Constrained choice with contextual calibration (Zhao et al. 2021): "
                            "divide each label's probability by its mean probability for content-free inputs "
                            "('N/A', '', '[MASK]') in the same prompt, removing the model's bias toward some labels.")


def task_spec(ctx: RunContext) -> TaskSpec:
    """The ladder's task settings (template, system prompt, label words, decoding), carried in the run context."""
    return ctx.settings


def label_words(ctx: RunContext, spec: TaskSpec | None = None) -> list[str]:
    """The answer text of each label, in label order."""
    words = (spec or task_spec(ctx)).label_words or {}
    return [words.get(name, name) for name in ctx.label_names]


def split_examples(split: Any, words: Sequence[str]) -> list[tuple[Input, str | None, str]]:
    """(input, pair, answer) for each example of a classification or generation split."""
    if hasattr(split, "references"):
        return [(x, None, ref) for x, ref in zip(split.inputs, split.references)]
    pairs = split.pairs or [None] * len(split.texts)
    return [(t, p, words[int(y)]) for t, p, y in zip(split.texts, pairs, split.labels)]


def resolve_text(name_or_path: str, base_dir: str | None = None) -> tuple[str, str]:
    """(text, name) of the forgetting text: a builtin text or a UTF-8 file (relative to the config's folder)."""
    from adaptlab.data.builtins import TEXTS, load_text

    if name_or_path in TEXTS:
        return load_text(name_or_path), name_or_path
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and base_dir:
        path = Path(base_dir) / path
    if not path.is_file():
        raise UserError(f"task.forgetting_text: '{name_or_path}' is neither a builtin text "
                        f"({', '.join(TEXTS.names())}) nor a file (no file '{path}'). Give one of them, or null to "
                        "turn the check off.")
    try:
        return path.read_text(encoding="utf-8"), path.name
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"task.forgetting_text: cannot read '{path}' as UTF-8 text ({e}); save it as UTF-8.") from None


class GenerativeMethod(TorchModelAccounting, Method):
    """A rung over a generative model. By itself it only prompts (nothing trains); subclasses adapt."""

    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "generation"})
    Params: ClassVar[type[BaseModel]] = ChoiceParams
    trains: ClassVar[bool] = False
    #: Soft-prompt positions the adapted model puts in front of every input (prompt tuning).
    virtual_tokens: int = 0

    def __init__(self, params: BaseModel, ctx: RunContext):
        super().__init__(params, ctx)
        self._prompt_stats: dict[tuple, tuple[int, int, int]] = {}

    # -- checks before any rung runs ----------------------------------------------------------------------------
    @classmethod
    def check(cls, params: BaseModel, ctx: RunContext, data: Any) -> list[str]:
        """Problems that would make this rung fail on this model and data, found without loading the weights."""
        try:
            spec = task_spec(ctx)
            config = lm.load_config(ctx.model, ctx.trust_remote_code)
            kind = lm.require_generative(config, ctx.model_spec, cls.name)
            tokenizer = lm.load_tokenizer(ctx.model.location, ctx.trust_remote_code)
            problems = cls.check_model(params, ctx, config, kind)
            problems += _check_labels(ctx, spec)
            if spec.forgetting_text:  # read now, not after the rung trained
                resolve_text(spec.forgetting_text, ctx.extra.get("base_dir"))
            window = lm.context_window(config, tokenizer)
            if window and ctx.max_length > window:
                problems.append(
                    f"data.max_length is {ctx.max_length} tokens, {ctx.max_length - window} more than the context "
                    f"window of '{ctx.model_spec}' ({window} tokens); set data.max_length to at most {window}."
                )
            chat_data = (data.meta() or {}).get("format") == "chat"
            style = resolve_style(spec, tokenizer, kind, label_words(ctx, spec), chat_data=chat_data)
            formatter = Formatter(tokenizer, style, kind, ctx.max_length)
            words = label_words(ctx, spec)
            for split in (data.train, data.test):
                for x, pair, answer in split_examples(split, words)[:1]:  # the fixed overhead is the same for all
                    formatter.encode(x, pair, answer)
        except UserError as e:
            return [str(e)]
        return problems

    @classmethod
    def check_model(cls, params: BaseModel, ctx: RunContext, config: Any, kind: str) -> list[str]:
        """Rung-specific model requirements (e.g. input embeddings for prompt tuning)."""
        return []

    # -- model -----------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.setup_formatting()
        self.model = self.place(self.adapt(self.base_model()))
        self.model.eval()

    def setup_formatting(self) -> None:
        """Tokenizer, model kind, context window and prompt formatter: everything but the weights."""
        ctx = self.ctx
        self.spec = task_spec(ctx)
        self.tokenizer = lm.load_tokenizer(ctx.model.location, ctx.trust_remote_code)
        config = lm.load_config(ctx.model, ctx.trust_remote_code)
        self.kind = lm.require_generative(config, ctx.model_spec, self.name)
        self.window = lm.context_window(config, self.tokenizer)
        self.words = label_words(ctx, self.spec) if ctx.label_names else []  # classification: answer words
        style = resolve_style(self.spec, self.tokenizer, self.kind, self.words)
        self.formatter = Formatter(self.tokenizer, style, self.kind, ctx.max_length)

    def base_model(self) -> torch.nn.Module:
        from transformers import set_seed

        set_seed(self.ctx.seed)
        return lm.load_model(self.ctx.model, self.kind, self.params.dtype, self.ctx.trust_remote_code)

    def merges_as(self) -> str | None:
        """A causal LM merges into a decoder (whatever the task: a classification rung prompts it); seq2seq models
        are not exported merged yet."""
        return "decoder" if self.kind == "causal" else None

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the run's device (a rung whose base is loaded in place, e.g. 4-bit, returns it as it is)."""
        return model.to(self.ctx.torch_device)

    def weights_format(self) -> str:
        """How the base's weights are held (its dtype setting; qlora: 4-bit), keying the base's forgetting score."""
        return str(self.params.dtype)

    def computes_in_half(self) -> bool:
        """Its dtype; auto: the weights as stored (bf16 for smollm2)."""
        return lm.in_half(self.ctx.model, self.params.dtype, self.ctx.trust_remote_code)

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        """Decide what trains. Prompting rungs freeze everything."""
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    @contextlib.contextmanager
    def base_view(self) -> Iterator[torch.nn.Module]:
        """The base model (before adaptation), for the forgetting baseline."""
        yield self.model

    @property
    def score_batch_size(self) -> int:
        return int(getattr(self.params, "eval_batch_size", None) or self.params.batch_size)

    makes_vocab_logits = True

    def scoring_batch(self) -> int:
        return self.score_batch_size

    def longest_tokens(self, data: Any) -> int:
        """The longest formatted training or test example (prompt, in-context examples and answer), as encoded."""
        longest = 0
        for split in (data.train, data.test):
            examples = split_examples(split, self.words)
            demos = self.demos_for([x for x, _, _ in examples], [p for _, p, _ in examples])
            for (x, pair, answer), shots in zip(examples, demos):
                longest = max(longest, len(self.formatter.encode(x, pair, answer, shots).input_ids))
        return longest or self.ctx.max_length

    # -- prompts -----------------------------------------------------------------------------------------------------
    def demos_for(self, inputs: Sequence[Input], pairs: Sequence[str | None] | None) -> list[list[Demo]]:
        """In-context examples for each input (none unless the rung is few-shot)."""
        return [[] for _ in inputs]

    def render_prompt(self, x: Input, pair: str | None = None) -> str:
        """The prompt exactly as the model sees it (after template, chat template and examples)."""
        demos = self.demos_for([x], [pair])[0]
        return self.tokenizer.decode(self.formatter.encode(x, pair, None, demos).prompt_ids)

    def _note(self, x: Input, pair: str | None, enc: Encoded, shots: int) -> None:
        key = (json.dumps(x) if not isinstance(x, str) else x, pair)
        self._prompt_stats[key] = (len(enc.prompt_ids), shots, enc.cut_tokens)

    # -- classification by constrained choice ------------------------------------------------------------------------
    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        if not self.words:
            raise UserError(f"rung '{self.name}': constrained choice needs labels, and this run has none "
                            "(it is not a classification task).")
        plist = pairs if pairs is not None else [None] * len(texts)
        demos = self.demos_for(texts, plist)
        encoded = []
        for text, pair, shots in zip(texts, plist, demos):
            row = [self.formatter.encode(text, pair, word, shots) for word in self.words]
            self._note(text, pair, row[0], len(shots))
            encoded += row
        groups: dict[tuple, int] = {}  # in-context example set -> its content-free rows (calibration)
        if getattr(self.params, "calibrate", False):
            for shots in demos:
                key = tuple(map(id, shots))
                if key not in groups:
                    groups[key] = len(encoded) // len(self.words)
                    encoded += [self.formatter.encode(cf, cf if pairs is not None else None, word, shots)
                                for cf in CONTENT_FREE for word in self.words]
        sums, counts = self.score(encoded)
        mean = getattr(self.params, "length_normalize", False)
        scores = (sums / np.maximum(counts, 1) if mean else sums).reshape(-1, len(self.words))
        logp = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
        out = logp[: len(texts)]
        if groups:  # divide by the label probabilities the model gives to content-free inputs
            k = len(CONTENT_FREE)
            prior = {key: np.log(np.exp(logp[start : start + k]).mean(axis=0)) for key, start in groups.items()}
            out = out - np.stack([prior[tuple(map(id, shots))] for shots in demos])
            out = out - np.logaddexp.reduce(out, axis=1, keepdims=True)
        return np.exp(out).astype(np.float32)

    def score(self, encoded: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray]:
        self.model.eval()
        return lm.answer_logprobs(self.model, self.kind, encoded, pad_id=self.tokenizer.pad_token_id,
                                  batch_size=self.score_batch_size, device=self.ctx.torch_device,
                                  virtual_tokens=self.virtual_tokens)

    # -- generation --------------------------------------------------------------------------------------------------
    def prompt_budget(self, settings: Any) -> int:
        """Prompt tokens allowed when generating: data.max_length, and room for max_new_tokens in the window."""
        budget = self.ctx.max_length
        if self.window:
            budget = min(budget, self.window - self.virtual_tokens - settings.max_new_tokens)
        if budget < 1:
            raise UserError(f"generation.max_new_tokens ({settings.max_new_tokens}) leaves no room for a prompt in "
                            f"the {self.window}-token context window of '{self.ctx.model_spec}'; lower it.")
        return budget

    def encode_prompts(self, inputs: Sequence[Input], pairs: Sequence[str | None] | None,
                       settings: Any) -> list[Encoded]:
        plist = list(pairs) if pairs is not None else [None] * len(inputs)
        demos = self.demos_for(inputs, plist)
        budget = self.prompt_budget(settings)
        formatter = Formatter(self.tokenizer, self.formatter.style, self.kind, budget)
        encoded = []
        for x, pair, shots in zip(inputs, plist, demos):
            enc = formatter.encode(x, pair, None, shots)
            self._note(x, pair, enc, len(shots))
            encoded.append(enc)
        return encoded

    def generate_tokens(self, inputs: Sequence[Input], pairs: Sequence[str | None] | None = None,
                        settings: Any = None) -> list[list[int]]:
        """New token ids for each input (greedy by default; ``settings`` is a GenerationSpec)."""
        settings = settings or self.spec.generation
        encoded = self.encode_prompts(inputs, pairs, settings)
        seed = settings.seed if settings.seed is not None else self.ctx.seed
        self.model.eval()
        return generate_ids(self.model, self.tokenizer, self.kind, [e.prompt_ids for e in encoded], settings,
                            seed=seed, device=self.ctx.torch_device)

    def generate(self, inputs: Sequence[Input], pairs: Sequence[str | None] | None = None,
                 settings: Any = None) -> list[str]:
        """Generated text for each input, cut at the first stop string."""
        settings = settings or self.spec.generation
        tokens = self.generate_tokens(inputs, pairs, settings)
        return [finish_text(self.tokenizer, ids, settings.stop) for ids in tokens]

    def reference_nll(self, inputs: Sequence[Input], references: Sequence[str]) -> list[tuple[float, int]]:
        """(negative log-likelihood in nats, tokens) of each reference answer after its prompt."""
        demos = self.demos_for(inputs, None)
        encoded = [self.formatter.encode(x, None, ref, shots) for x, ref, shots in zip(inputs, references, demos)]
        sums, counts = self.score(encoded)
        return [(float(-s), int(c)) for s, c in zip(sums, counts)]

    # -- preference pairs ---------------------------------------------------------------------------------------------
    def score_pairs(self, prompts: Sequence[Input], chosen: Sequence[str],
                    rejected: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The preference task: each response's log-likelihood after its prompt (the sum of its token
        log-probabilities; their mean with ``length_normalize``), for the chosen and the rejected responses."""
        from adaptlab.methods._pairs import encode_pairs, pair_logprobs

        sum_c, n_c, sum_r, n_r = pair_logprobs(self, self.model, encode_pairs(self.formatter, prompts, chosen,
                                                                              rejected))
        if getattr(self.params, "length_normalize", False):
            return sum_c / np.maximum(n_c, 1), sum_r / np.maximum(n_r, 1)
        return sum_c, sum_r

    # -- what the rung reports besides the task metrics -------------------------------------------------------------
    def extra_metrics(self) -> dict[str, Any]:
        """Forgetting, and prompt sizes of the inputs predicted so far (the test split in a ladder)."""
        out: dict[str, Any] = {}
        forgetting = self.forgetting()
        if forgetting is not None:
            out["forgetting"] = forgetting
        if self._prompt_stats:
            tokens, shots, cut = (np.array(v, dtype=np.float64) for v in zip(*self._prompt_stats.values()))
            out["prompt"] = {
                "tokens_mean": round(float(tokens.mean()), 2), "tokens_max": int(tokens.max()),
                "shots_mean": round(float(shots.mean()), 3), "inputs": len(tokens),
                "truncated_inputs": int((cut > 0).sum()),
            }
        return out

    def language_model(self) -> Any:
        """The model as adapted (adapter included), for lm-eval; None with a soft prompt, whose virtual positions
        lm-eval's wrapper can't see past."""
        from adaptlab.judging import LanguageModel

        return None if self.virtual_tokens else LanguageModel(self.model, self.tokenizer, self.kind)

    def forgetting(self) -> dict[str, Any] | None:
        """{"base_ppl", "adapted_ppl", "delta", "metric"} on the forgetting text, or None when it is off."""
        spec = self.spec
        if not spec.forgetting_text:
            return None
        text, name = resolve_text(spec.forgetting_text, self.ctx.extra.get("base_dir"))
        window = min(lm.FORGETTING_WINDOW, (self.window or 2 * lm.FORGETTING_WINDOW) // 2)
        if self.window and window + self.virtual_tokens > self.window:
            window = self.window - self.virtual_tokens
        key = (self.ctx.model.sha256 or self.ctx.model_spec, self.kind, self.weights_format(), name,
               spec.forgetting_tokens, window, self.ctx.torch_device)

        def ppl(model: torch.nn.Module, virtual: int) -> float:
            model.eval()
            return lm.text_perplexity(model, self.tokenizer, self.kind, text, max_tokens=spec.forgetting_tokens,
                                      window=window, device=self.ctx.torch_device, virtual_tokens=virtual)

        if key not in _BASE_PERPLEXITY:
            with self.base_view() as base:
                _BASE_PERPLEXITY[key] = ppl(base, 0)
        base_ppl = _BASE_PERPLEXITY[key]
        adapted = ppl(self.model, self.virtual_tokens) if self.trains else base_ppl
        return {"base_ppl": round(base_ppl, 4), "adapted_ppl": round(adapted, 4),
                "delta": round(adapted - base_ppl, 4),
                "metric": f"perplexity on {name} ({spec.forgetting_tokens} tokens)"}

    # -- shipping --------------------------------------------------------------------------------------------------
    def prompt_record(self) -> dict[str, Any]:
        s = self.formatter.style
        return {"template": s.template, "system_prompt": s.system_prompt, "chat": s.chat,
                "label_words": list(s.label_words), "base_model": self.ctx.model_spec}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / PROMPT_FILE).write_text(json.dumps(self.prompt_record(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        method = cls(params, ctx)
        method.setup()
        return method


def _check_labels(ctx: RunContext, spec: TaskSpec) -> list[str]:
    if not ctx.label_names:  # generation: no labels to check
        return []
    unknown = sorted(set(spec.label_words or {}) - set(ctx.label_names))
    if unknown:
        return [f"task.label_words: {unknown} are not labels; labels are {ctx.label_names}."]
    return []
