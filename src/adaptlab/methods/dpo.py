"""Direct preference optimisation (trl's DPOTrainer) with LoRA adapters: the reference is the model with the adapter
switched off, so no second copy of the model is held. With ``lora: false`` every weight trains instead, against a
frozen copy of the starting model held next to it (twice the memory), and the rung ships the whole model.

A pair's score is DPO's implicit reward, beta * (log pi(y|x) - log pi_ref(y|x)), summed over the response's tokens:
the rung prefers the response it has learned to make more likely than the reference does. DPO usually starts from a
supervised (SFT) model: with ``from: <an lm_lora, lm_ia3 or lm_full rung>`` that rung's model (its adapter merged)
is both the start and the reference. The rung then ships the parent's weights (copied into ``weights/parent``) with
its own adapter, so loading it needs nothing of the parent's folder.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.methods._causal import Dtype, GenerativeMethod
from adaptlab.methods._pairs import encode_pairs, pair_logprobs, pair_tokens, preference_dataset
from adaptlab.methods._peft import load_adapter
from adaptlab.methods._preference import (
    PairTrainingParams,
    PreferenceRung,
    causal_only,
    check_grouping,
    dpo_trainer_class,
    trl_args,
)
from adaptlab.methods._sft import ADAPTER
from adaptlab.methods.base import METHODS, Method
from adaptlab.methods.lm_lora import LMLoRA, LMLoRAParams
from adaptlab.search_space import Choice, Range
from adaptlab.training import train

PARENT, PARENT_JSON, MODEL = "parent", "parent.json", "model"


class DPOParams(PairTrainingParams, LMLoRAParams):
    epochs: float | None = Field(None, gt=0, description="Passes over the training pairs (null: enough passes for "
                                 "min_steps optimizer steps, so a few hundred pairs still train).")
    min_steps: int | None = Field(100, gt=0, description="With epochs null: the fewest optimizer steps.")
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="Peak learning rate (of the LoRA adapter).")
    group_by_length: bool | None = Field(False, description="Must stay off: pairs have no single length to group by.")
    lora: bool = Field(True, description="Train LoRA adapters (the reference is the adapter switched off). false: "
                       "every weight trains (set a lower learning_rate, e.g. 5e-6), against a frozen copy of the "
                       "starting model (twice the memory); r, alpha, dropout and target_modules are then unused.")
    dtype: Dtype = Field("auto", description="Weights dtype of the base: auto (as stored: bf16 for smollm2), float32, "
                         "bfloat16. Adapters train in float32; with lora: false use float32 (bf16 weights lose small "
                         "updates).")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "sigmoid_norm"] = Field(
        "sigmoid", description="trl's DPO loss: sigmoid (the DPO paper), ipo, hinge (SLiC), robust, sigmoid_norm.")


@METHODS.register("dpo")
class DPO(PreferenceRung, LMLoRA):
    """DPO with a LoRA adapter; the reference is the adapter switched off."""

    Params = DPOParams
    search_space = {"learning_rate": Range(low=1e-5, high=5e-4, log=True), "beta": Choice(values=(0.05, 0.1, 0.3))}
    starts_from = frozenset({"lm_lora", "lm_ia3", "lm_full"})

    @classmethod
    def check_model(cls, params: Any, ctx: RunContext, config: Any, kind: str) -> list[str]:
        return super().check_model(params, ctx, config, kind) + causal_only(cls.name, ctx, kind)

    def __init__(self, params: Any, ctx: RunContext):
        super().__init__(params, ctx)
        #: the parent rung's (folder, run.json) when this rung starts from one (see :meth:`start_from`)
        self.parent: tuple[Path, dict[str, Any]] | None = None
        #: with ``lora: false``: the frozen starting model, DPO's reference (with LoRA the adapter switched off is)
        self.reference: torch.nn.Module | None = None

    def start_from(self, run_dir: Path, info: dict[str, Any]) -> None:
        """Start (and take the reference) from a finished SFT rung instead of the base (read in :meth:`setup`)."""
        self.parent = self.accepted_parent(run_dir, info)

    def setup(self) -> None:
        if self.parent is None:
            super().setup()
            return
        self.setup_formatting()
        run_dir, info = self.parent
        start = merged_parent(run_dir / "weights", info["rung"]["method"], info["params"], self.params.dtype, self.ctx)
        self.model = self.adapt(start).to(self.ctx.torch_device)
        self.model.eval()

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        """A LoRA adapter on the starting model; with ``lora: false`` every weight trains and a frozen copy of the
        starting model is kept as the reference."""
        if self.params.lora:
            return super().adapt(model)
        self.reference = frozen_copy(model).to(self.ctx.torch_device)
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    @contextlib.contextmanager
    def reference_view(self) -> Iterator[torch.nn.Module]:
        """DPO's reference: the adapter switched off, or the frozen copy (``lora: false``)."""
        if self.reference is not None:
            yield self.reference
            return
        with self.model.disable_adapter():
            yield self.model

    # -- training ---------------------------------------------------------------------------------------------------
    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        check_grouping(self.params, self.name)
        pairs = encode_pairs(self.formatter, data.train.prompts, data.train.chosen, data.train.rejected)
        evals = encode_pairs(self.formatter, data.validation.prompts, data.validation.chosen,
                             data.validation.rejected)
        trainer_cls, config_cls = dpo_trainer_class()
        self.model.train()
        result = train(
            self.model, params=self.params, train_dataset=preference_dataset(pairs),
            eval_dataset=preference_dataset(evals) if evals else None, workdir=workdir, seed=self.ctx.seed,
            use_cpu=self.ctx.torch_device == "cpu", resume=resume, trainer_cls=trainer_cls,
            trainer_kwargs={"processing_class": self.tokenizer, "ref_model": self.reference}, args_cls=config_cls,
            args_kwargs=trl_args(self.ctx, beta=self.params.beta, loss_type=[self.params.loss_type]),
        )
        if self.params.lora and "ref" in self.model.peft_config:  # trl's copy of the untrained adapter (the
            self.model.delete_adapter("ref")  # reference while training)
            self.model.set_adapter("default")
        self.model.eval()
        result["tokens"] = int(pair_tokens(pairs) * result["epochs"])
        return result

    # -- scores ---------------------------------------------------------------------------------------------------
    def score_pairs(self, prompts: Any, chosen: Any, rejected: Any) -> tuple[np.ndarray, np.ndarray]:
        """DPO's implicit reward of each response: beta * (log pi - log pi_ref), pi_ref being the reference (the
        adapter switched off, or the frozen starting model)."""
        pairs = encode_pairs(self.formatter, prompts, chosen, rejected)
        policy_c, _, policy_r, _ = pair_logprobs(self, self.model, pairs)
        with self.reference_view() as reference:
            ref_c, _, ref_r, _ = pair_logprobs(self, reference, pairs)
        beta = self.params.beta
        return beta * (policy_c - ref_c), beta * (policy_r - ref_r)

    @contextlib.contextmanager
    def base_view(self) -> Iterator[torch.nn.Module]:
        """The original base model (forgetting is measured against it, also when the rung starts from a parent)."""
        if self.parent is None:
            with self.reference_view() as reference:
                yield reference
            return
        base = self.base_model().to(self.ctx.torch_device)
        try:
            yield base
        finally:
            del base

    # -- shipping -------------------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        if self.params.lora:
            super().save(path)  # prompt.json and the adapter
        else:
            GenerativeMethod.save(self, path)  # prompt.json
            self.model.save_pretrained(str(path / MODEL))  # safetensors
            self.tokenizer.save_pretrained(str(path / MODEL))
        if self.parent is not None:
            run_dir, info = self.parent
            shutil.copytree(run_dir / "weights", path / PARENT, dirs_exist_ok=True)
            record = {"method": info["rung"]["method"], "params": info["params"], "rung": info["rung"]}
            (path / PARENT_JSON).write_text(json.dumps(record, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        method = cls(params, ctx)
        method.setup_formatting()
        if (path / PARENT_JSON).is_file():
            record = json.loads((path / PARENT_JSON).read_text(encoding="utf-8"))
            method.parent = (path, {"rung": record["rung"], "params": record["params"]})
            base = merged_parent(path / PARENT, record["method"], record["params"], params.dtype, ctx)
        else:
            base = method.base_model()
        if params.lora:
            method.model = load_adapter(base, path / ADAPTER, ctx.torch_device)
            return method
        from transformers import AutoModelForCausalLM

        method.reference = frozen(base).to(ctx.torch_device)
        method.model = AutoModelForCausalLM.from_pretrained(str(path / MODEL), use_safetensors=True, dtype="auto")
        method.model.to(ctx.torch_device).eval()
        return method


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with every weight frozen (full-weight DPO's reference)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model``, which keeps training."""
    import copy

    return frozen(copy.deepcopy(model))


def merged_parent(weights: Path, method: str, params: dict, dtype: str, ctx: RunContext) -> torch.nn.Module:
    """A finished SFT rung's model from its weights folder, as its method loads it, any adapter merged in, in
    ``dtype``: the start and reference of a DPO rung that starts from it."""
    from peft import PeftModel

    parent_cls = METHODS.get(method)
    parent = parent_cls.load(weights, parent_cls.Params.model_validate({**params, "dtype": dtype}), ctx)
    model = parent.model
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    if dtype != "auto":
        model = model.to(getattr(torch, dtype))
    return model


__all__ = ["DPO", "DPOParams"]
