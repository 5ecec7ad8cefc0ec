"""Full fine-tuning of a generative model (supervised, loss on the answer only); every weight trains and ships.

It can also continue from another rung (``from: <rung>``): an earlier ``lm_full`` rung's model, or an ``lm_lora`` /
``lm_ia3`` rung's adapter merged into the base, takes the base model's place (e.g. a LoRA stage, then a full
fine-tune on top). The rung still ships a whole model, so loading, exporting and serving it need nothing of the
parent; its forgetting is measured against the original base model.
"""

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
from adaptlab.search_space import Range

MODEL = "model"


class LMFullParams(SFTParams):
    dtype: Dtype = Field("float32", description="Weights dtype while training: float32 (default; bf16 weights "
                         "lose small updates), bfloat16 or auto (as stored).")
    learning_rate: float = Field(2e-5, gt=0, lt=1, description="Peak learning rate.")


@METHODS.register("lm_full")
class LMFull(SFTMethod):
    """Every weight of the generative model trains on prompt -> answer pairs."""

    Params = LMFullParams
    search_space = {"learning_rate": Range(low=5e-6, high=1e-4, log=True)}
    starts_from = frozenset({"lm_full", "lm_lora", "lm_ia3"})

    def __init__(self, params: Any, ctx: RunContext):
        super().__init__(params, ctx)
        #: the parent rung's (folder, run.json) when this rung starts from one (see :meth:`start_from`)
        self.parent: tuple[Path, dict[str, Any]] | None = None

    def start_from(self, run_dir: Path, info: dict[str, Any]) -> None:
        """Train on top of a finished lm_full, lm_lora or lm_ia3 rung instead of the base (read in :meth:`setup`)."""
        self.parent = self.accepted_parent(run_dir, info)

    def setup(self) -> None:
        if self.parent is None:
            super().setup()
            return
        self.setup_formatting()
        self.model = self.adapt(self.parent_model()).to(self.ctx.torch_device)
        self.model.eval()

    def parent_model(self) -> torch.nn.Module:
        """The parent rung's model as a plain transformers model in this rung's dtype: loaded as the parent method
        loads it (in this rung's dtype, so an adapter merges at that precision), any adapter merged in."""
        from peft import PeftModel

        assert self.parent is not None
        run_dir, info = self.parent
        parent_cls = METHODS.get(info["rung"]["method"])
        params = parent_cls.Params.model_validate({**info["params"], "dtype": self.params.dtype})
        model = parent_cls.load(run_dir / "weights", params, self.ctx).model
        if isinstance(model, PeftModel):
            model = model.merge_and_unload()
        if self.params.dtype != "auto":  # a saved lm_full model loads as stored
            model = model.to(getattr(torch, self.params.dtype))
        return model

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

