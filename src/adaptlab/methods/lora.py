"""LoRA: low-rank adapters on chosen linear layers (peft); the new head trains too. Ships only the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.methods._finetune import EncoderParams, FineTuneMethod
from adaptlab.methods._peft import check_targets, load_adapter, lora_config, save_adapter, target_problems, wrap
from adaptlab.methods.base import METHODS, Method
from adaptlab.search_space import Choice, Range


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
    search_space = {"learning_rate": Range(low=1e-4, high=5e-3, log=True), "r": Choice(values=(4, 8, 16))}

    @classmethod
    def check(cls, params: Any, ctx: RunContext, data: Any) -> list[str]:
        """Target layer names the model lacks would fail the rung only after loading: say so before it starts."""
        return target_problems(params.target_modules, ctx, cls.name, generative=False)

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        from peft import TaskType

        targets = self.params.target_modules
        check_targets(model, targets, self.name)
        p = self.params
        task_type = TaskType(self.objective.peft_task_type)  # SEQ_CLS, or TOKEN_CLS for token classification
        return wrap(model, lora_config(model, task_type, r=p.r, alpha=p.alpha, dropout=p.dropout,
                                       targets=targets), self.name)

    def save(self, path: Path) -> None:
        save_adapter(self.model, self.tokenizer, path / "adapter")
        self.save_start(path)  # the encoder it started from (from: domain_mlm), under the adapter

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        from transformers import AutoTokenizer

        method = cls(params, ctx)
        method.restore_start(path)
        method.tokenizer = AutoTokenizer.from_pretrained(str(path / "adapter"))
        method.model = load_adapter(method.base_model(), path / "adapter", ctx.torch_device)
        return method
