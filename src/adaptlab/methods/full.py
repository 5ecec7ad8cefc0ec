"""Full fine-tuning: every weight trains; the whole model is shipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaptlab.context import RunContext
from adaptlab.methods._finetune import FineTuneMethod
from adaptlab.methods.base import METHODS, Method
from adaptlab.search_space import Range


@METHODS.register("full")
class FullFineTune(FineTuneMethod):
    search_space = {"learning_rate": Range(low=1e-5, high=2e-4, log=True)}

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def save(self, path: Path) -> None:
        self.model.save_pretrained(path / "model")  # safetensors
        self.tokenizer.save_pretrained(path / "model")

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        from transformers import AutoTokenizer

        method = cls(params, ctx)
        folder = path / "model"
        method.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        method.model = method.objective.load(folder).to(ctx.torch_device)
        method.model.eval()
        return method
