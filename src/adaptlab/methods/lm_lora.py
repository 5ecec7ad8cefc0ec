"""LoRA on a generative model (supervised fine-tuning, loss on the answer only); ships only the adapter.

Low-rank adapters on the linear layers (default: all of them, peft's ``all-linear``). For classification the
answer is the label's word and prediction is by constrained choice; for generation the answer is the reference.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.methods._peft import check_targets, lora_config, peft_task_type, target_problems, wrap
from adaptlab.methods._sft import SFTMethod, SFTParams
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Choice, Range


class LMLoRAParams(SFTParams):
    r: int = Field(8, gt=0, description="Adapter rank.")
    alpha: float = Field(16, gt=0, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        None, description="Linear layer names to adapt (default: every linear layer but the output head)."
    )
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate.")


@METHODS.register("lm_lora")
class LMLoRA(SFTMethod):
    """LoRA adapters trained on prompt -> answer pairs."""

    Params = LMLoRAParams
    four_bit_variant = "qlora"
    search_space = {"learning_rate": Range(low=5e-5, high=1e-3, log=True), "r": Choice(values=(4, 8, 16))}

    @classmethod
    def check_model(cls, params: Any, ctx: RunContext, config: Any, kind: str) -> list[str]:
        """Target layer names the model lacks would fail the rung only after loading: say so before it starts."""
        return target_problems(params.target_modules, ctx, cls.name, generative=True)

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        p = self.params
        check_targets(model, p.target_modules, self.name)
        config = lora_config(model, peft_task_type(self.kind), r=p.r, alpha=p.alpha, dropout=p.dropout,
                             targets=p.target_modules or "all-linear")
        return wrap(model, config, self.name)
