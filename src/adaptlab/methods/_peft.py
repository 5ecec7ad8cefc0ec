"""Every peft helper in one place: target checks, adapter configs, wrapping, saving and loading adapters.

The encoder rung (``lora``), the generative rungs (``lm_lora``, ``lm_ia3``, ``prompt_tuning``), the server and the
merged export all go through these, so a target name, an error message or the adapter folder layout is decided once.
peft is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch

from adaptlab.errors import UserError, did_you_mean

#: The files peft writes for an adapter (``save_pretrained``).
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def peft_task_type(kind: str) -> Any:
    """peft's task type for a generative model kind (``seq2seq`` or ``causal``)."""
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM if kind == "seq2seq" else TaskType.CAUSAL_LM


# -- targets ----------------------------------------------------------------------------------------------------


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Short names of the model's linear layers (nn.Linear and GPT-2's Conv1D), the targets adapters can wrap."""
    from transformers.pytorch_utils import Conv1D

    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))})


def check_targets(model: torch.nn.Module, targets: list[str] | str | None, rung: str) -> None:
    """UserError naming the linear layers when ``targets`` names layers the model doesn't have."""
    if not targets or isinstance(targets, str):
        return
    known = linear_layer_names(model)
    missing = [t for t in targets if t not in known]
    if missing:
        hints = "".join(did_you_mean(t, known) for t in missing)
        raise UserError(f"{rung}.params.target_modules: {missing} not found in {type(model).__name__}.{hints} "
                        f"Linear layers: {', '.join(known)}")


def target_problems(targets: list[str] | str | None, ctx: Any, rung: str, generative: bool) -> list[str]:
    """:func:`check_targets` before any rung starts, on the model's structure only: it is built from its config on
    the meta device, so no weights are read. Empty when the targets are fine (or the structure cannot be built;
    the check in ``adapt`` still runs then)."""
    if not targets or isinstance(targets, str):
        return []
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    from adaptlab.generation import lm

    try:
        config = lm.load_config(ctx.model, ctx.trust_remote_code)
        kind = lm.model_kind(config)
        auto = (AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM) if generative and \
            kind != "encoder" else AutoModelForSequenceClassification
        with torch.device("meta"):
            model = auto.from_config(config, trust_remote_code=ctx.trust_remote_code)
    except Exception:  # noqa: BLE001 - a structure we cannot build here is checked when the rung loads it
        return []
    try:
        check_targets(model, targets, rung)
    except UserError as e:
        return [str(e)]
    return []


# -- configs and wrapping ---------------------------------------------------------------------------------------


def lora_config(model: torch.nn.Module, task_type: Any, *, r: int, alpha: float, dropout: float,
                targets: list[str] | str | None) -> Any:
    """A LoraConfig for ``model``; GPT-2-style Conv1D layers (weights stored transposed) get ``fan_in_fan_out``."""
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    return LoraConfig(task_type=task_type, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                      fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()))


def ia3_config(task_type: Any, targets: list[str] | None, feedforward: list[str] | None, rung: str) -> Any:
    """An IA3Config; feed-forward modules are a subset of the targets, so they need targets too."""
    from peft import IA3Config

    if feedforward and not targets:
        raise UserError(f"{rung}.params.feedforward_modules needs target_modules too (a subset of them).")
    return IA3Config(task_type=task_type, target_modules=targets, feedforward_modules=feedforward if targets else None)


def wrap(model: torch.nn.Module, config: Any, rung: str, settings: str = "target_modules") -> Any:
    """``get_peft_model``, with peft's ValueError (e.g. no layer matched) as a UserError naming the linear layers
    and the rung's setting(s) to change (``settings``, e.g. ``"target_modules and params.feedforward_modules"``)."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise UserError(f"{rung}: {e} Set {rung}.params.{settings} (linear layers: "
                        f"{', '.join(linear_layer_names(model))}).") from None


def is_prompt_learning(model_or_config: Any) -> bool:
    """Whether a peft model's active adapter (or a peft config) is a soft prompt, which has no weights to merge or
    to switch in and out of a shared base."""
    config = model_or_config
    if hasattr(model_or_config, "peft_config") and hasattr(model_or_config, "active_adapter"):
        config = model_or_config.peft_config[model_or_config.active_adapter]
    return bool(getattr(config, "is_prompt_learning", False))


# -- adapter folders --------------------------------------------------------------------------------------------


def save_adapter(model: Any, tokenizer: Any, folder: Path) -> None:
    """The adapter (``adapter_model.safetensors`` + ``adapter_config.json``) and the tokenizer, into ``folder``."""
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def load_adapter(base: torch.nn.Module, folder: Path, device: str | None = None) -> Any:
    """``base`` with the adapter saved in ``folder``, on ``device`` (None: where the base is), in eval mode."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(folder))
    return (model.to(device) if device else model).eval()


# -- 4-bit bases (qlora) -----------------------------------------------------------------------------------------


def _params4bit() -> type | None:
    """bitsandbytes' packed 4-bit parameter class, if bitsandbytes is loaded (no 4-bit weights exist otherwise)."""
    bnb = sys.modules.get("bitsandbytes")
    return bnb.nn.Params4bit if bnb is not None else None


def unpacked_numel(param: torch.Tensor) -> int:
    """The number of values a parameter holds: a 4-bit parameter packs two per byte, so ``numel()`` counts half."""
    packed = _params4bit()
    if packed is not None and isinstance(param, packed) and param.quant_state is not None:
        return int(param.quant_state.shape.numel())
    return param.numel()


def is_4bit(model: torch.nn.Module) -> bool:
    packed = _params4bit()
    return packed is not None and any(isinstance(p, packed) for p in model.parameters())


def _dequantize(weight: Any) -> torch.Tensor:
    """The values a 4-bit parameter holds. On CPUs with AVX512-BF16, bitsandbytes repacks a layer's weight for its
    own kernel at the first forward pass in eval mode; that layout is undone (into a copy) before dequantising."""
    import bitsandbytes.functional as F

    data, state = weight.data, weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):  # a bitsandbytes QuantState flag
        # the inverse reassigns the state's fields: a shallow copy leaves the layer's own state as it is
        data, state = F._convert_weight_packed_for_cpu_inverse(data, copy.copy(state))
    return F.dequantize_4bit(data, state)


def dequantized_base(peft_model: Any) -> torch.nn.Module:
    """A plain copy of a peft model's 4-bit base, its linear weights dequantised (the values the 4-bit matmuls use),
    in the dtype of its unquantised weights: fp32 after peft's k-bit preparation (so a bf16 base's merged export is
    twice its stored size; the parity check compares it with the 4-bit rung); no adapter."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    base = peft_model.get_base_model()
    quantized = {name.replace(".base_layer", ""): m for name, m in base.named_modules()
                 if isinstance(m, bnb.nn.Linear4bit)}
    dtype = base.get_input_embeddings().weight.dtype  # the unquantised weights' (fp32 once prepared)
    config = base.config.__class__.from_dict(base.config.to_dict())
    del config.quantization_config
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    plain = auto.from_config(config, dtype=dtype)
    state = {f"{name}.weight": _dequantize(m.weight).to(dtype) for name, m in quantized.items()}
    for name, param in base.named_parameters():
        if "lora_" not in name and not isinstance(param, bnb.nn.Params4bit):
            state[name.replace(".base_layer", "")] = param.detach().to(dtype)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    untied = set(missing) - tied_keys(plain)
    if unexpected or untied:
        raise RuntimeError(f"dequantising the 4-bit base left weights unmatched: missing {sorted(untied)}, "
                           f"unexpected {sorted(unexpected)}")
    plain.tie_weights()
    return plain.to(base.device).eval()


def tied_keys(model: torch.nn.Module) -> set[str]:
    """Names of the parameters that share another's storage (e.g. an output head tied to the input embeddings)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.add(name)
        seen.setdefault(id(param), name)
    return tied


def merged_dequantized(peft_model: Any) -> torch.nn.Module:
    """A LoRA model over a 4-bit base, merged into the dequantised base: the adapter's deltas added to the weights
    its training saw (peft's own merge would quantise the sum back to 4 bits)."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    name = peft_model.active_adapter
    plain = get_peft_model(dequantized_base(peft_model), peft_model.peft_config[name])
    set_peft_model_state_dict(plain, get_peft_model_state_dict(peft_model, adapter_name=name))
    return plain.merge_and_unload().eval()
