"""Merged export: the rung folded into the base model and saved as a plain transformers model (safetensors only).

LoRA and (IA)3 adapters are merged with peft's ``merge_and_unload``; rungs that ship a delta (head only, top
layers) or a whole model (full) already are a plain model once loaded. Embedding rungs (zero-shot, few-shot,
linear probe) have no transformers head to merge into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptlab.errors import UserError


def check_mergeable(method: Any, kind: str) -> None:
    """UserError unless the rung's model, adapters merged, is the ``kind`` the task's bundle ships (``classifier``,
    ``tagger``, ``decoder``): a causal LM prompted to classify merges into a decoder, not a classifier; embedding
    rungs have no transformers model to merge into."""
    merges_as = method.merges_as()
    if merges_as is None:
        raise UserError(
            f"rung '{method.name}' has no transformers model to merge into (embedding rungs, prompting rungs over an "
            "encoder or for tagging, seq2seq language models); --merge and --onnx take lora, full, head_only and "
            "top_layers runs, and causal LM rungs (lm_lora, lm_ia3, lm_full) of a generation task. Ship its bundle "
            "(adaptlab export RUN --to DIR) and load it with adaptlab.load.")
    if merges_as != kind:
        raise UserError(
            f"rung '{method.name}' merges into a {merges_as}, but runs of this task ship a {kind}: its merged and "
            f"ONNX files could not stand in for the rung (a language model prompted to classify answers through its "
            f"prompt and label words, which a plain {kind} doesn't have). Ship its bundle without --merge/--onnx "
            "(adaptlab export RUN --to DIR) and load it with adaptlab.load.")
    from adaptlab.methods._peft import is_prompt_learning

    if is_prompt_learning(method.model):
        raise UserError(f"rung '{method.name}': prompt-learning adapters can't be merged into the weights; ship "
                        "the adapter bundle instead.")


def merged_model(method: Any, kind: str) -> Any:
    """The rung's model with any peft adapter merged into its base weights (modifies ``method.model``); ``kind``:
    the export kind the task's bundle ships (see :func:`check_mergeable`)."""
    check_mergeable(method, kind)
    from peft import PeftModel

    from adaptlab.methods._peft import is_4bit, merged_dequantized

    model = method.model
    if isinstance(model, PeftModel):
        model = merged_dequantized(model) if is_4bit(model) else model.merge_and_unload()
        method.model = model
    return model.eval()


def quantized(method: Any) -> bool:
    """Whether the rung's model holds 4-bit weights (a generative rung over a 4-bit base: qlora)."""
    from adaptlab.methods._causal import GenerativeMethod
    from adaptlab.methods._peft import is_4bit

    return isinstance(method, GenerativeMethod) and is_4bit(method.model)


def save_merged(model: Any, tokenizer: Any, dest: Path) -> None:
    """``save_pretrained`` with safetensors only, plus the tokenizer; refuses to leave a pickle behind."""
    import warnings

    dest.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecations inside save_pretrained
        model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))
    pickles = [p.name for p in dest.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    if pickles:  # pragma: no cover - transformers writes safetensors when asked
        raise RuntimeError(f"{dest}: save_pretrained wrote pickle files {pickles}")
