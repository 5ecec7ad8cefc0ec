"""Full fine-tuning of a generative model (supervised, loss on the answer only); every weight trains and ships."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.methods._causal import Dtype, GenerativeMethod
from adaptlab.methods._sft import SFTMethod, SFTParams
from adaptlab.methods.base import METHODS, Method

MODEL = "model"


class LMFullParams(SFTParams):
    dtype: Dtype = Field("float32", description="Weights dtype while training: float32 (default; bf16 weights "
                         "lose small updates), bfloat16 or auto (as stored).")
    learning_rate: float = Field(2e-5, gt=0, lt=1, description="Peak learning rate.")


@METHODS.register("lm_full")
class LMFull(SFTMethod):
    """Every weight of the generative model trains on prompt -> answer pairs."""

    Params = LMFullParams

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    @contextlib.contextmanager
    def base_view(self) -> Iterator[torch.nn.Module]:
        base = self.base_model().to(self.ctx.torch_device)
        try:
            yield base
        finally:
            del base

    def save(self, path: Path) -> None:
        GenerativeMethod.save(self, path)
        self.model.save_pretrained(str(path / MODEL))  # safetensors
        self.tokenizer.save_pretrained(str(path / MODEL))

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        method = cls(params, ctx)
        method.setup_formatting()
        auto = AutoModelForCausalLM if method.kind == "causal" else AutoModelForSeq2SeqLM
        method.model = auto.from_pretrained(str(path / MODEL), use_safetensors=True, dtype="auto")
        method.model.to(ctx.torch_device).eval()
        return method

