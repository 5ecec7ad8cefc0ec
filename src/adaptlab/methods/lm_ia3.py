"""(IA)3 on a generative model: learned vectors rescale keys, values and feed-forward activations; ships the vectors.

Far fewer trainable parameters than LoRA (one vector per adapted layer). Default targets are peft's for the
architecture (e.g. k/v/down projections for Llama, c_attn/c_proj for GPT-2, k/v/wo for T5).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.methods._peft import check_targets, ia3_config, peft_task_type, target_problems, wrap
from adaptlab.methods._sft import SFTMethod, SFTParams
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Range


class LMIA3Params(SFTParams):
    target_modules: list[str] | None = Field(None, description="Layers whose outputs are rescaled (default: peft's "
                                             "choice for the architecture).")
    feedforward_modules: list[str] | None = Field(
        None, description="Which of target_modules are feed-forward layers (their inputs are rescaled)."
    )
    learning_rate: float = Field(3e-3, gt=0, lt=1, description="Peak learning rate.")


@METHODS.register("lm_ia3")
class LMIA3(SFTMethod):
    """(IA)3 scaling vectors trained on prompt -> answer pairs."""

    Params = LMIA3Params
    search_space = {"learning_rate": Range(low=1e-3, high=1e-2, log=True)}

    @classmethod
    def check_model(cls, params: Any, ctx: RunContext, config: Any, kind: str) -> list[str]:
        """Target layer names the model lacks would fail the rung only after loading: say so before it starts."""
        return target_problems(params.target_modules, ctx, cls.name, generative=True)

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        targets = self.params.target_modules
        check_targets(model, targets, self.name)
        config = ia3_config(peft_task_type(self.kind), targets, self.params.feedforward_modules, self.name)
        return wrap(model, config, self.name, "target_modules and params.feedforward_modules")
