"""Language models as the generative rungs use them: kind, loading, answer log-likelihoods and text perplexity.

One scoring function, :func:`answer_logprobs`, serves three purposes: constrained choice (the log-likelihood of each
label's answer after the prompt), the perplexity of the test references, and the perplexity of a general text
(forgetting). It scores exactly the ``answer_ids`` of each :class:`~adaptlab.generation.formatting.Encoded` example,
the tokens the loss is on in training.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from adaptlab.distributed import predicting
from adaptlab.errors import UserError
from adaptlab.generation.formatting import IGNORE_INDEX, Encoded

ModelKind = Literal["causal", "seq2seq", "encoder"]
#: Tokens per scored window of the forgetting text (at most half the model's context window).
FORGETTING_WINDOW = 256


def model_kind(config: Any) -> ModelKind:
    """``seq2seq`` for encoder-decoder models, ``causal`` for decoders with an LM head, else ``encoder``."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "causal"
    if not archs:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )

        mt = getattr(config, "model_type", "")
        if mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            return "causal"
    return "encoder"


def load_config(resolved: Any, trust_remote_code: bool = False) -> Any:
    from transformers import AutoConfig

    from adaptlab.models import load_kwargs

    kwargs = {k: v for k, v in load_kwargs(resolved, trust_remote_code=trust_remote_code).items()
              if k != "use_safetensors"}
    return AutoConfig.from_pretrained(resolved.location, **kwargs)


def in_half(resolved: Any, dtype: str, trust_remote_code: bool = False) -> bool:
    """Whether a model loaded with ``dtype`` (auto: as stored, read from its config) computes in bf16/fp16."""
    if dtype != "auto":
        return dtype in ("bfloat16", "float16")
    stored = load_config(resolved, trust_remote_code).dtype
    return str(stored).removeprefix("torch.") in ("bfloat16", "float16")


def require_generative(config: Any, model_spec: str, rung: str) -> Literal["causal", "seq2seq"]:
    """The model's kind, or a UserError when it is an encoder-only model (it cannot generate text)."""
    kind = model_kind(config)
    if kind == "encoder":
        arch = ", ".join(getattr(config, "architectures", None) or [getattr(config, "model_type", "?")])
        raise UserError(
            f"rung '{rung}' needs a model that generates text (a causal LM or a seq2seq model), but '{model_spec}' "
            f"is an encoder-only model ({arch}). Use an encoder rung (lora, full, linear_probe, ...) with it, or a "
            "generative model such as smollm2, tiny-random-gpt2 or tiny-random-t5."
        )
    return kind  # type: ignore[return-value]


def context_window(config: Any, tokenizer: Any | None = None) -> int | None:
    """The longest sequence the model takes (positions it was built for), or None when it has no fixed limit."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
    return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def load_tokenizer(location: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_model(resolved: Any, kind: str, dtype: str = "auto", trust_remote_code: bool = False,
               **extra: Any) -> torch.nn.Module:
    """The causal-LM or seq2seq model of ``resolved`` in ``dtype`` (auto: as stored, e.g. bf16 for smollm2);
    ``extra`` goes to ``from_pretrained`` (e.g. a 4-bit ``quantization_config`` and its ``device_map``)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from adaptlab.models import load_kwargs

    cls = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    return cls.from_pretrained(resolved.location, dtype=torch_dtype,
                               **load_kwargs(resolved, trust_remote_code=trust_remote_code), **extra)


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


#: Shortest shared prompt prefix worth computing once and reusing from the KV cache.
MIN_SHARED_PREFIX = 8


def shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix common to all ``rows``."""
    if not rows:
        return 0
    first, n = rows[0], min(len(r) for r in rows)
    for row in rows[1:]:
        i = 0
        while i < n and row[i] == first[i]:
            i += 1
        n = i
    return n


@predicting
def answer_logprobs(
    model: torch.nn.Module,
    kind: str,
    examples: Sequence[Encoded],
    *,
    pad_id: int,
    batch_size: int = 16,
    device: str = "cpu",
    virtual_tokens: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(sum of log-probabilities of each example's answer tokens, number of answer tokens), as float64/int arrays.

    Causal: prompt + answer in one right-padded sequence; seq2seq: prompt to the encoder, answer as decoder labels.
    ``virtual_tokens`` soft-prompt positions that a prompt-tuned causal model puts in front are skipped. A prompt
    prefix shared by every example (system prompt, few-shot examples) is run once and reused from the KV cache.
    """
    totals = np.zeros(len(examples), dtype=np.float64)
    counts = np.array([len(e.answer_ids) for e in examples], dtype=np.int64)
    prefix = shared_prefix([e.prompt_ids for e in examples]) if kind == "causal" and not virtual_tokens else 0
    cache = _prefix_cache(model, examples[0].prompt_ids[:prefix], device) if prefix >= MIN_SHARED_PREFIX else None
    if cache is None:
        prefix = 0
    order = np.argsort([len(e.prompt_ids) + len(e.answer_ids) for e in examples], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = [examples[i] for i in idx]
        if kind == "seq2seq":
            logits, targets = _seq2seq_logits(model, batch, pad_id, device)
        else:
            logits, targets = _causal_logits(model, batch, pad_id, device, virtual_tokens, prefix, cache)
        keep = targets != IGNORE_INDEX
        picked = torch.log_softmax(logits[keep].float(), dim=-1).gather(-1, targets[keep].unsqueeze(-1)).squeeze(-1)
        rows = keep.nonzero()[:, 0]
        sums = torch.zeros(len(batch), dtype=torch.float64, device=picked.device)
        sums.index_add_(0, rows, picked.double())
        totals[idx] = sums.cpu().numpy()
    return totals, counts


def _prefix_cache(model: torch.nn.Module, prefix: list[int], device: str) -> tuple[Any, torch.Tensor] | None:
    """(KV cache, logits at the last position) of the shared prefix, or None when the model returns no cache."""
    out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True)
    if out.past_key_values is None or not hasattr(out.past_key_values, "batch_repeat_interleave"):
        return None
    return out.past_key_values, out.logits[:, -1:]


def _causal_logits(model: torch.nn.Module, batch: list[Encoded], pad_id: int, device: str, virtual_tokens: int,
                   prefix: int, cache: tuple[Any, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting each token after the first (or after the shared prefix), and the matching targets."""
    inputs = _pad([e.input_ids[prefix:] for e in batch], pad_id).to(device)
    mask = _pad([[1] * (len(e.input_ids) - prefix) for e in batch], 0).to(device)
    targets = _pad([e.labels[prefix:] for e in batch], IGNORE_INDEX).to(device)
    if cache is None:
        out = model(input_ids=inputs, attention_mask=mask)
        return out.logits[:, virtual_tokens:-1], targets[:, 1:]
    past, last = cache
    past = copy.deepcopy(past)
    past.batch_repeat_interleave(len(batch))
    full_mask = torch.cat([torch.ones(len(batch), prefix, dtype=mask.dtype, device=device), mask], dim=1)
    out = model(input_ids=inputs, attention_mask=full_mask, past_key_values=past, use_cache=True)
    logits = torch.cat([last.expand(len(batch), -1, -1), out.logits[:, :-1]], dim=1)
    return logits, targets


def _seq2seq_logits(model: torch.nn.Module, batch: list[Encoded], pad_id: int,
                    device: str) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = _pad([e.prompt_ids for e in batch], pad_id).to(device)
    mask = _pad([[1] * len(e.prompt_ids) for e in batch], 0).to(device)
    labels = _pad([e.answer_ids for e in batch], IGNORE_INDEX).to(device)
    return model(input_ids=inputs, attention_mask=mask, labels=labels).logits, labels


def text_windows(ids: Sequence[int], kind: str, window: int) -> list[Encoded]:
    """A token stream cut into windows to score: causal windows score all but their first token; seq2seq windows
    are decoder targets with the previous window (or nothing) as encoder input."""
    chunks = [list(ids[i : i + window]) for i in range(0, len(ids), window)]
    chunks = [c for c in chunks if len(c) > 1]
    if kind == "seq2seq":
        return [Encoded(prompt_ids=chunks[i - 1] if i else [], answer_ids=c) for i, c in enumerate(chunks)]
    return [Encoded(prompt_ids=c[:1], answer_ids=c[1:]) for c in chunks]


def text_perplexity(model: torch.nn.Module, tokenizer: Any, kind: str, text: str, *, max_tokens: int, window: int,
                    device: str = "cpu", virtual_tokens: int = 0, batch_size: int = 4) -> float:
    """Perplexity of the first ``max_tokens`` tokens of ``text`` (no special tokens), in windows of ``window``."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"][:max_tokens]  # longer than the window
    windows = text_windows(ids, kind, window)
    if kind == "seq2seq":  # an empty encoder input still needs one token
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
        windows = [Encoded(w.prompt_ids or [eos], w.answer_ids) for w in windows]
    if not windows:
        raise UserError("the forgetting text is too short to score; give a longer task.forgetting_text.")
    sums, counts = answer_logprobs(model, kind, windows, pad_id=tokenizer.pad_token_id, batch_size=batch_size,
                                   device=device, virtual_tokens=virtual_tokens)
    return float(math.exp(-sums.sum() / counts.sum()))

