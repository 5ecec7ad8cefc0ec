"""LoRA: low-rank adapters on chosen linear layers (peft); the new head trains too. Ships only the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.methods._finetune import EncoderParams, FineTuneMethod
from adaptlab.methods._sft import check_targets, linear_layer_names, target_problems
from adaptlab.methods.base import METHODS, Method


class LoRAParams(EncoderParams):
    r: int = Field(8, gt=0, description="Adapter rank.")
    alpha: float = Field(16, gt=0, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        None, description="Linear layer names to adapt (default: peft's choice for the architecture)."
    )
    learning_rate: float = Field(5e-4, gt=0, lt=1, description="Peak learning rate.")


@METHODS.register("lora")
class LoRA(FineTuneMethod):
    Params = LoRAParams

    @classmethod
    def check(cls, params: Any, ctx: RunContext, data: Any) -> list[str]:
        """Target layer names the model lacks would fail the rung only after loading: say so before it starts."""
        return target_problems(params.target_modules, ctx, cls.name, generative=False)

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        from peft import LoraConfig, TaskType, get_peft_model

        targets = self.params.target_modules
        check_targets(model, targets, self.name)
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.params.r,
            lora_alpha=self.params.alpha,
            lora_dropout=self.params.dropout,
            target_modules=targets,
        )
        try:
            return get_peft_model(model, config)
        except ValueError as e:
            known = linear_layer_names(model)
            raise UserError(f"lora: {e} Set lora.params.target_modules (linear layers: {known}).") from None

    def save(self, path: Path) -> None:
        self.model.save_pretrained(path / "adapter")  # adapter_model.safetensors + adapter_config.json
        self.tokenizer.save_pretrained(path / "adapter")

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        from peft import PeftModel
        from transformers import AutoTokenizer

        method = cls(params, ctx)
        method.tokenizer = AutoTokenizer.from_pretrained(str(path / "adapter"))
        method.model = PeftModel.from_pretrained(method.base_model(), str(path / "adapter")).to(ctx.torch_device)
        method.model.eval()
        return method
