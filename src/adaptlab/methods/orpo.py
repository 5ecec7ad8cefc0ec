"""ORPO (odds-ratio preference optimisation, trl.experimental's ORPOTrainer) with LoRA: one stage, no reference
model and no SFT stage before it. Its loss is the supervised loss on the chosen sequence (trl computes it over the
prompt and the response) plus beta (lambda in the paper) times -log sigmoid of the log odds ratio of the chosen over
the rejected response.

A pair's score is what ORPO's odds ratio compares: the log-odds log(p / (1 - p)) of each response, p being the
response's mean per-token probability (exp of its mean token log-probability) after the prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.methods._pairs import encode_pairs, pair_logprobs, pair_tokens, preference_dataset
from adaptlab.methods._preference import (
    PairTrainingParams,
    PreferenceRung,
    causal_only,
    check_grouping,
    orpo_trainer_class,
    trl_args,
)
from adaptlab.methods.base import METHODS
from adaptlab.methods.lm_lora import LMLoRA, LMLoRAParams
from adaptlab.search_space import Choice, Range
from adaptlab.training import train


class ORPOParams(PairTrainingParams, LMLoRAParams):
    epochs: float | None = Field(None, gt=0, description="Passes over the training pairs (null: enough passes for "
                                 "min_steps optimizer steps).")
    min_steps: int | None = Field(100, gt=0, description="With epochs null: the fewest optimizer steps.")
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="Peak learning rate (of the LoRA adapter).")
    group_by_length: bool | None = Field(False, description="Must stay off: pairs have no single length to group by.")


def log_odds(mean_logp: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of p = exp(mean_logp), stable for p near 0 and 1 (as trl's log1mexp)."""
    x = np.minimum(np.asarray(mean_logp, dtype=np.float64), -1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):  # np.where computes both branches
        one_minus = np.where(x > -np.log(2), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))
    return x - one_minus


@METHODS.register("orpo")
class ORPO(PreferenceRung, LMLoRA):
    """ORPO with a LoRA adapter: reference-free, no SFT stage."""

    Params = ORPOParams
    search_space = {"learning_rate": Range(low=1e-5, high=5e-4, log=True), "beta": Choice(values=(0.05, 0.1, 0.25))}

    @classmethod
    def check_model(cls, params: Any, ctx: RunContext, config: Any, kind: str) -> list[str]:
        return super().check_model(params, ctx, config, kind) + causal_only(cls.name, ctx, kind)

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        check_grouping(self.params, self.name)
        pairs = encode_pairs(self.formatter, data.train.prompts, data.train.chosen, data.train.rejected)
        evals = encode_pairs(self.formatter, data.validation.prompts, data.validation.chosen,
                             data.validation.rejected)
        trainer_cls, config_cls = orpo_trainer_class()
        self.model.train()
        result = train(
            self.model, params=self.params, train_dataset=preference_dataset(pairs),
            eval_dataset=preference_dataset(evals) if evals else None, workdir=workdir, seed=self.ctx.seed,
            use_cpu=self.ctx.torch_device == "cpu", resume=resume, trainer_cls=trainer_cls,
            trainer_kwargs={"processing_class": self.tokenizer}, args_cls=config_cls,
            args_kwargs=trl_args(self.ctx, beta=self.params.beta, padding_value=self.tokenizer.pad_token_id),
        )
        self.model.eval()
        result["tokens"] = int(pair_tokens(pairs) * result["epochs"])
        return result

    def score_pairs(self, prompts: Any, chosen: Any, rejected: Any) -> tuple[np.ndarray, np.ndarray]:
        """The log-odds of each response's mean token probability (what ORPO's odds ratio compares)."""
        sum_c, n_c, sum_r, n_r = pair_logprobs(self, self.model, encode_pairs(self.formatter, prompts, chosen,
                                                                              rejected))
        return log_odds(sum_c / np.maximum(n_c, 1)), log_odds(sum_r / np.maximum(n_r, 1))
