"""QLoRA (Dettmers et al. 2023): LoRA adapters trained over a base held in 4 bits.

The base is loaded through bitsandbytes as NF4 (double quantisation of the scales, bf16 compute by default), which
runs on CUDA and on CPU; peft's ``prepare_model_for_kbit_training`` readies it (norms in fp32, inputs that carry
gradients) and LoRA trains on top, as in ``lm_lora``. The rung ships only the adapter; loading it again quantises
and prepares the base the same way, so the shipped rung is the one evaluated. Parameters are counted unpacked (a
4-bit matrix stores two values per byte); ``adaptlab export --merge`` merges the adapter into the dequantised base,
which the parity check compares with the 4-bit rung. Forgetting is measured against the 4-bit base.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from adaptlab.generation import lm
from adaptlab.methods.base import METHODS
from adaptlab.methods.lm_lora import LMLoRA, LMLoRAParams
from adaptlab.runtime import RUNTIME


class QLoRAParams(LMLoRAParams):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the base's linear weights.")
    double_quant: bool = Field(True, description="Quantise the quantisation scales too (about 0.4 bit per weight "
                               "saved).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype the 4-bit weights are dequantised to for each matmul.")


@METHODS.register("qlora")
class QLoRA(LMLoRA):
    """LoRA adapters over a 4-bit NF4 base (bitsandbytes)."""

    Params = QLoRAParams
    four_bit_variant = None  # already
    shared_base = False

    def base_model(self) -> torch.nn.Module:
        from transformers import BitsAndBytesConfig, set_seed

        p = self.params
        set_seed(self.ctx.seed)
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=p.quant_type, bnb_4bit_use_double_quant=p.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, p.compute_dtype))
        # placed while loading: a 4-bit model can't be moved with .to() afterwards
        model = lm.load_model(self.ctx.model, self.kind, p.dtype, self.ctx.trust_remote_code,
                              quantization_config=quantization, device_map={"": self.ctx.torch_device})
        return self.prepared(model)

    @staticmethod
    def prepared(model: torch.nn.Module) -> torch.nn.Module:
        """peft's preparation for k-bit training (the unquantised weights in fp32, inputs that carry gradients),
        for training and for loading alike, so the rung that ships computes as the one evaluated."""
        from peft import prepare_model_for_kbit_training

        checkpointing = RUNTIME.get().gradient_checkpointing
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                               gradient_checkpointing_kwargs={"use_reentrant": False})

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def computes_in_half(self) -> bool:
        """The 4-bit layers multiply in compute_dtype (the other weights are fp32 after k-bit preparation)."""
        return self.params.compute_dtype != "float32"

    def weights_format(self) -> str:
        p = self.params
        return f"{p.dtype}/{p.quant_type}{'-dq' if p.double_quant else ''}/{p.compute_dtype}"

