"""Merged export: the rung folded into the base model and saved as a plain transformers model (safetensors only).

LoRA and (IA)3 adapters are merged with peft's ``merge_and_unload``; rungs that ship a delta (head only, top
layers) or a whole model (full) already are a plain model once loaded. Embedding rungs (zero-shot, few-shot,
linear probe) have no transformers head to merge into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptlab.errors import UserError


def merged_model(method: Any) -> Any:
    """The rung's model with any peft adapter merged into its base weights (modifies ``method.model``)."""
    from adaptlab.methods._causal import GenerativeMethod
    from adaptlab.methods._finetune import FineTuneMethod

    causal = isinstance(method, GenerativeMethod) and getattr(method, "kind", None) == "causal"
    if not isinstance(method, FineTuneMethod) and not causal:
        raise UserError(
            f"rung '{method.name}' has no transformers sequence classifier to merge (embedding and prompting rungs "
            "keep the base model as it is); --merge and --onnx take lora, full, head_only, top_layers runs and causal "
            "LM rungs (lm_lora, lm_ia3, lm_full). Ship "
            "its bundle (adaptlab export RUN --to DIR) and load it with adaptlab.load."
        )
    from peft import PeftModel

    from adaptlab.methods._peft import is_4bit, is_prompt_learning, merged_dequantized

    model = method.model
    if isinstance(model, PeftModel):
        if is_prompt_learning(model):
            raise UserError(f"rung '{method.name}': prompt-learning adapters can't be merged into the weights; ship "
                            "the adapter bundle instead.")
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
