"""A reward model (trl's RewardTrainer): the base causal LM with a one-output sequence-classification head reads
prompt + response (formatted as the generative rungs format them: template, chat template) and gives a scalar;
trained with the pairwise Bradley-Terry loss, -log sigmoid(r(chosen) - r(rejected)). LoRA adapters on the linear
layers and the new head train (peft saves the head with the adapter); the rung ships only those. A pair's score is
the reward itself.

It writes no text (so no forgetting to report, and ``adaptlab generate`` refuses it); its held-out preference
accuracy is the pairwise accuracy the task measures for every rung.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from adaptlab.context import RunContext
from adaptlab.distributed import predicting
from adaptlab.errors import UserError
from adaptlab.generation import lm
from adaptlab.methods._causal import PROMPT_FILE
from adaptlab.methods._pairs import encode_pairs, pair_tokens
from adaptlab.methods._peft import check_targets, load_adapter, lora_config, save_adapter, target_problems, wrap
from adaptlab.methods._preference import PreferenceRung, build_formatter, check_grouping, trl_args
from adaptlab.methods._sft import ADAPTER
from adaptlab.methods.base import METHODS, Method, TorchModelAccounting
from adaptlab.search_space import Choice, Range
from adaptlab.training import TrainParams, train


class RewardModelParams(TrainParams):
    epochs: float | None = Field(None, gt=0, description="Passes over the training pairs (null: enough passes for "
                                 "min_steps optimizer steps, so a few hundred pairs still train).")
    min_steps: int | None = Field(100, gt=0, description="With epochs null: the fewest optimizer steps.")
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="Peak learning rate (adapter and head).")
    batch_size: int = Field(8, gt=0, description="Pairs per optimizer step (per device).")
    eval_batch_size: int = Field(16, gt=0, description="Sequences per forward pass when scoring.")
    group_by_length: bool | None = Field(False, description="Must stay off: pairs have no single length to group by.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "float32", description="Weights dtype: float32 (default: the new head trains in the base's dtype, and bf16 "
        "loses its small updates), bfloat16 or auto (as stored).")
    r: int = Field(8, gt=0, description="Adapter rank.")
    alpha: float = Field(16, gt=0, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        None, description="Linear layer names to adapt (default: every linear layer but the head).")
    center_rewards: float | None = Field(None, gt=0, description="trl's center_rewards_coefficient: pulls the "
                                         "rewards' mean towards 0 (e.g. 0.01); null: off.")


@METHODS.register("reward_model")
class RewardModel(PreferenceRung, TorchModelAccounting, Method):
    """A scalar reward head on the base model, trained on the pairs (LoRA + head)."""

    Params = RewardModelParams
    data_parallel = True
    search_space = {"learning_rate": Range(low=1e-5, high=5e-4, log=True), "r": Choice(values=(4, 8, 16))}

    @classmethod
    def check(cls, params: BaseModel, ctx: RunContext, data: Any) -> list[str]:
        try:
            _, kind, _ = build_formatter(ctx, chat_data=data.meta().get("format") == "chat")
        except UserError as e:
            return [str(e)]
        problems = target_problems(params.target_modules, ctx, cls.name, generative=True)
        if kind != "causal":
            problems.append(f"{cls.name} puts a reward head on a causal LM; '{ctx.model_spec}' is a {kind} model.")
        return problems + super().check(params, ctx, data)

    # -- model ------------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.setup_formatting()
        self.model = self.adapt(self.base_model()).to(self.ctx.torch_device)
        self.model.eval()

    def setup_formatting(self) -> None:
        self.formatter, self.kind, self.window = build_formatter(self.ctx)
        self.tokenizer = self.formatter.tokenizer

    def computes_in_half(self) -> bool:
        return lm.in_half(self.ctx.model, self.params.dtype, self.ctx.trust_remote_code)

    def base_model(self) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification, set_seed

        from adaptlab.models import load_kwargs

        set_seed(self.ctx.seed)  # the new head's initial weights
        dtype: Any = "auto" if self.params.dtype == "auto" else getattr(torch, self.params.dtype)
        model = AutoModelForSequenceClassification.from_pretrained(
            self.ctx.model.location, num_labels=1, dtype=dtype,
            **load_kwargs(self.ctx.model, trust_remote_code=self.ctx.trust_remote_code))
        model.config.pad_token_id = self.tokenizer.pad_token_id  # where the head reads each sequence's last token
        return model

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        from peft import TaskType

        p = self.params
        check_targets(model, p.target_modules, self.name)
        config = lora_config(model, TaskType.SEQ_CLS, r=p.r, alpha=p.alpha, dropout=p.dropout,
                             targets=p.target_modules or "all-linear")
        return wrap(model, config, self.name)

    # -- training ---------------------------------------------------------------------------------------------------
    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        from trl import RewardConfig, RewardTrainer

        check_grouping(self.params, self.name)
        train_ds = self._dataset(data.train)
        eval_ds = self._dataset(data.validation) if len(data.validation) else None
        self.model.train()
        result = train(
            self.model, params=self.params, train_dataset=train_ds, eval_dataset=eval_ds, workdir=workdir,
            seed=self.ctx.seed, use_cpu=self.ctx.torch_device == "cpu", resume=resume, trainer_cls=RewardTrainer,
            trainer_kwargs={"processing_class": self.tokenizer}, args_cls=RewardConfig,
            args_kwargs=trl_args(self.ctx, center_rewards_coefficient=self.params.center_rewards),
        )
        self.model.eval()
        pairs = encode_pairs(self.formatter, data.train.prompts, data.train.chosen, data.train.rejected)
        result["tokens"] = int(pair_tokens(pairs) * result["epochs"])
        return result

    def _dataset(self, split: Any) -> Any:
        """chosen_ids / rejected_ids: prompt + response, the sequences RewardTrainer scores as they are."""
        from datasets import Dataset

        pairs = encode_pairs(self.formatter, split.prompts, split.chosen, split.rejected)
        return Dataset.from_dict({"chosen_ids": [p.prompt_ids + p.chosen_ids for p in pairs],
                                  "rejected_ids": [p.prompt_ids + p.rejected_ids for p in pairs]})

    # -- scores ---------------------------------------------------------------------------------------------------
    def score_pairs(self, prompts: Any, chosen: Any, rejected: Any) -> tuple[np.ndarray, np.ndarray]:
        """The reward of each prompt + response, the pair encoded as it trains (one prompt, cut for both)."""
        pairs = encode_pairs(self.formatter, prompts, chosen, rejected)
        rewards = self.rewards([p.prompt_ids + p.chosen_ids for p in pairs] +
                               [p.prompt_ids + p.rejected_ids for p in pairs])
        return rewards[:len(pairs)], rewards[len(pairs):]

    def score_responses(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        """The reward of each response after its prompt (what a reward judge and grpo's reward ask)."""
        return self.rewards([self.formatter.encode(p, None, r).input_ids
                             for p, r in zip(prompts, responses, strict=True)])

    @predicting
    def rewards(self, rows: list[list[int]]) -> np.ndarray:
        """The scalar head's output for each token sequence (prompt + response), batched by length."""
        self.model.eval()
        rewards = np.zeros(len(rows), dtype=np.float64)
        order = np.argsort([len(r) for r in rows], kind="stable")
        pad, device, batch = self.tokenizer.pad_token_id, self.ctx.torch_device, self.params.eval_batch_size
        for start in range(0, len(rows), batch):
            idx = order[start:start + batch]
            width = max(len(rows[i]) for i in idx)
            ids = torch.tensor([rows[i] + [pad] * (width - len(rows[i])) for i in idx], device=device)
            mask = torch.tensor([[1] * len(rows[i]) + [0] * (width - len(rows[i])) for i in idx], device=device)
            rewards[idx] = self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu().numpy()
        return rewards

    # -- shipping -------------------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        style = self.formatter.style
        record = {"template": style.template, "system_prompt": style.system_prompt, "chat": style.chat,
                  "base_model": self.ctx.model_spec, "head": "reward (one output)"}
        (path / PROMPT_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        save_adapter(self.model, self.tokenizer, path / ADAPTER)

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        method = cls(params, ctx)
        method.setup_formatting()
        method.model = load_adapter(method.base_model(), path / ADAPTER, ctx.torch_device)
        return method
