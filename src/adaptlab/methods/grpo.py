"""Reinforcement learning from a reward: trl's GRPOTrainer with a LoRA adapter, rewarded by a finished adaptlab run.

For each training prompt the policy samples ``num_generations`` completions; the reward run scores them as the task
would show them (cut at the task's stop strings, stripped) -- a classification rung's probability of ``target_label``
for the completion alone (e.g. "fresh" from the Rotten Tomatoes classifier the classification ladder produced), or a
preference ladder's ``reward_model`` rung on prompt + completion. Each completion's advantage is its reward
standardised within its group (trl's defaults: ``scale_rewards="group"``, the ``dapo`` loss), and the policy moves
toward the better ones with ``beta`` times the KL to the starting model (the adapter switched off) as a penalty.

Prompts are the task's inputs through the rung's template (the references are not used for training; the task
still scores the test outputs against them). trl samples from adaptlab's own token ids of each prompt
(:func:`grpo_trainer_class`), encoded as the task encodes them when it predicts: the same template and chat markup,
long inputs cut to leave room for ``max_new_tokens`` (the task's generation setting at test time).

Besides the task's metrics the rung reports ``kl_to_base``: KL(policy || base) of completions it samples (temperature
1) for up to ``kl_prompts`` test prompts, a Monte-Carlo estimate per completion and per token, and the reward trl
logged while training (``history``: ``reward``, ``kl``). Reward before and after comes from a ``task.judges.reward``
judge with the same run (the base rung's mean reward next to this rung's).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field, field_validator

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.evaluation.stats import bootstrap_mean
from adaptlab.generation.decoding import finish_text, generate_ids
from adaptlab.generation.formatting import Encoded, Input
from adaptlab.judging import reward
from adaptlab.judging.settings import RewardJudge
from adaptlab.methods._preference import causal_only
from adaptlab.methods.base import METHODS
from adaptlab.methods.lm_lora import LMLoRA, LMLoRAParams
from adaptlab.search_space import Choice, Range
from adaptlab.tasks._settings import GenerationSpec
from adaptlab.training import FINISHED_RUNS, Schedule, train

#: trl's log keys kept in the rung's training history
LOGGED = ("reward", "reward_std", "kl", "completions/mean_length")


class GRPOParams(LMLoRAParams):
    reward: RewardJudge | None = Field(None, description="Required: the finished run whose score is the reward: a "
                                       "classification rung with target_label ({run: runs/rotten_tomatoes/"
                                       "linear_probe, target_label: fresh}), or a preference ladder's reward_model "
                                       "rung (its folder alone).")
    epochs: float | None = Field(None, gt=0, description="Passes over the training prompts (null: enough passes "
                                 "for min_steps optimizer steps).")
    min_steps: int | None = Field(60, gt=0, description="With epochs null: the fewest optimizer steps.")
    batch_size: int = Field(4, gt=0, description="Prompts per optimizer step (each sampled num_generations times).")
    learning_rate: float = Field(5e-5, gt=0, lt=1, description="Peak learning rate (of the LoRA adapter).")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group whose mean reward "
                                 "is each completion's baseline).")
    max_new_tokens: int = Field(32, gt=0, description="Most tokens of a sampled completion.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature of the completions.")
    beta: float = Field(0.05, ge=0, description="Weight of the KL penalty to the starting model (0: none).")
    kl_prompts: int = Field(64, ge=0, description="Test prompts whose sampled completions estimate the KL to the base "
                            "after training (0: not measured).")
    group_by_length: bool | None = Field(False, description="Must stay off: prompts are sampled in groups.")
    evals_per_epoch: int = Field(0, ge=0, description="Unused: the rung keeps its last weights (validation would "
                                 "sample completions); must stay 0.")

    @field_validator("reward", mode="before")
    @classmethod
    def _run_folder(cls, v: Any) -> Any:
        return {"run": v} if isinstance(v, str) else v


@METHODS.register("grpo")
class GRPO(LMLoRA):
    """GRPO with a LoRA adapter, rewarded by a finished classification or reward-model run."""

    Params = GRPOParams
    tasks: ClassVar[frozenset[str]] = frozenset({"generation"})
    #: trl's sampling loop runs on the main process (no data-parallel wiring here)
    data_parallel: ClassVar[bool] = False
    runtime_options: ClassVar[frozenset[str]] = frozenset({"precision", "optimizer"})  # trl's generate-then-train
    four_bit_variant: ClassVar[str | None] = None
    search_space = {"learning_rate": Range(low=1e-5, high=3e-4, log=True), "beta": Choice(values=(0.0, 0.05, 0.2))}

    @classmethod
    def check(cls, params: BaseModel, ctx: RunContext, data: Any) -> list[str]:
        problems = super().check(params, ctx, data)
        if params.reward is None:
            problems.append("grpo needs params.reward: the finished run that scores its completions, e.g. {run: "
                            "runs/rotten_tomatoes/linear_probe, target_label: fresh} or a reward_model rung's folder.")
        else:
            problems += reward.check(params.reward, "params.reward")
        if params.group_by_length is not False or params.evals_per_epoch:
            problems.append("grpo: set group_by_length: false and evals_per_epoch: 0 (prompts are sampled in groups "
                            "and the rung keeps its last weights).")
        per_step = params.batch_size * params.gradient_accumulation_steps
        if len(data.train) < per_step:
            problems.append(f"grpo: params.batch_size x gradient_accumulation_steps is {per_step} prompts per step, "
                            f"more than the {len(data.train)} training prompts; lower params.batch_size.")
        return problems

    @classmethod
    def check_model(cls, params: Any, ctx: RunContext, config: Any, kind: str) -> list[str]:
        return super().check_model(params, ctx, config, kind) + causal_only(cls.name, ctx, kind, instead="lm_lora")

    @classmethod
    def input_digest(cls, params: BaseModel, ctx: RunContext) -> str | None:
        """The reward run's records: re-running it re-runs this rung on --resume."""
        return reward.run_digest(params.reward.run) if params.reward is not None else None

    def __init__(self, params: BaseModel, ctx: RunContext):
        super().__init__(params, ctx)
        #: prompt ids of the inputs predicted since training (the test split in a ladder): the KL estimate's prompts
        self._predicted: list[list[int]] = []

    # -- training ---------------------------------------------------------------------------------------------------
    def rollout_settings(self) -> GenerationSpec:
        """Sampling as the rung trains (and as it estimates its KL): temperature, completion length."""
        return GenerationSpec(max_new_tokens=self.params.max_new_tokens, do_sample=True,
                              temperature=self.params.temperature, batch_size=self.params.eval_batch_size)

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        from datasets import Dataset

        load_run = FINISHED_RUNS.get()
        if load_run is None or self.params.reward is None:
            raise UserError("grpo learns from a finished reward run (params.reward), which a ladder loads: run it "
                            "with `adaptlab compare`.")
        score = reward.build_scorer(self.params.reward, load_run, "params.reward")
        inputs = list(data.train.inputs)
        encoded = self.encode_prompts(inputs, None, self.rollout_settings())
        texts = [self.tokenizer.decode(e.prompt_ids) for e in encoded]
        trainer_cls, config_cls = grpo_trainer_class()
        p = self.params
        rewards = reward_function(score, inputs, self.tokenizer, self.spec.generation.stop)
        self.model.train()
        result = train(
            self.model, params=p, train_dataset=Dataset.from_dict({"prompt": texts, "row": list(range(len(texts)))}),
            eval_dataset=None, workdir=workdir, seed=self.ctx.seed, use_cpu=self.ctx.torch_device == "cpu",
            resume=resume, trainer_cls=trainer_cls, history_keys=LOGGED,
            trainer_kwargs={"processing_class": self.tokenizer, "reward_funcs": [rewards],
                            "prompt_ids": {t: e.prompt_ids for t, e in zip(texts, encoded)}},
            # trl's sampler drops an incomplete last batch: max_steps makes it run the steps the schedule records
            args_kwargs={"max_steps": Schedule.resolve(p, len(texts)).steps,
                         "per_device_train_batch_size": p.batch_size * p.num_generations,
                         "num_generations": p.num_generations, "max_completion_length": p.max_new_tokens,
                         "temperature": p.temperature, "beta": p.beta,
                         "top_p": 1.0, "top_k": 0, "log_completions": False},
            args_cls=config_cls,
        )
        if "ref" in self.model.peft_config:  # trl's copy of the untrained adapter (the reference while training)
            self.model.delete_adapter("ref")
            self.model.set_adapter("default")
        self.model.eval()
        self._prompt_stats.clear()
        self._predicted.clear()
        result["tokens"] = int(sum(len(e.prompt_ids) + p.max_new_tokens for e in encoded) * p.num_generations
                               * result["epochs"])
        return result

    # -- what it reports beyond the task's metrics -----------------------------------------------------------------
    def encode_prompts(self, inputs: Any, pairs: Any, settings: Any) -> list[Encoded]:
        encoded = super().encode_prompts(inputs, pairs, settings)
        self._predicted += [e.prompt_ids for e in encoded][: max(0, self.params.kl_prompts - len(self._predicted))]
        return encoded

    def extra_metrics(self) -> dict[str, Any]:
        out = super().extra_metrics()
        kl = self.kl_to_base(self._predicted)
        if kl is not None:
            out["kl_to_base"] = kl
        return out

    def kl_to_base(self, prompts: list[list[int]]) -> dict[str, Any] | None:
        """KL(policy || base) on completions the policy samples (temperature 1) for ``prompts``: the mean over
        completions of log pi(y|x) - log pi_base(y|x), with its interval, and per completion token."""
        if not prompts:
            return None
        settings = GenerationSpec(max_new_tokens=self.params.max_new_tokens, do_sample=True, temperature=1.0,
                                  batch_size=self.params.eval_batch_size)
        self.model.eval()
        samples = generate_ids(self.model, self.tokenizer, self.kind, prompts, settings, seed=self.ctx.seed,
                               device=self.ctx.torch_device)
        encoded = [Encoded(list(x), list(y)) for x, y in zip(prompts, samples) if y]
        if not encoded:
            return None
        policy, tokens = self.score(encoded)
        with self.base_view():
            base, _ = self.score(encoded)
        gap = np.asarray(policy, dtype=float) - np.asarray(base, dtype=float)
        return {"per_completion": float(gap.mean()), "interval": list(bootstrap_mean(gap, seed=self.ctx.seed)),
                "per_token": float(gap.sum() / max(1, int(np.sum(tokens)))), "completions": len(encoded),
                "temperature": 1.0}


def reward_function(score: reward.Scorer, inputs: list[Input], tokenizer: Any, stop: list[str]) -> Any:
    """trl's reward function: the reward run's score of each completion as the task shows it (its text cut at the
    stop strings, stripped: :func:`finish_text`), its prompt found by the dataset's ``row``."""
    def reward_(prompts: list[str], completions: list[str], row: list[int], completion_ids: list[list[int]],
                **_: Any) -> list[float]:
        shown = [finish_text(tokenizer, ids, stop) for ids in completion_ids]
        return [float(r) for r in score([inputs[i] for i in row], shown)]

    reward_.__name__ = "reward"
    return reward_


@functools.cache
def grpo_trainer_class() -> tuple[type, type]:
    """(GRPOTrainer sampling from adaptlab's token ids of each prompt, GRPOConfig)."""
    from trl import GRPOConfig, GRPOTrainer

    class PretokenizedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose prompts are adaptlab's encodings (``prompt_ids``: the prompt text -> its ids)."""

        def __init__(self, *args: Any, prompt_ids: dict[str, list[int]], data_collator: Any = None, **kwargs: Any):
            self.prompt_ids = prompt_ids  # data_collator: trl's sampling batches prompts itself
            super().__init__(*args, **kwargs)

        def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict]:
            return [list(self.prompt_ids[p]) for p in prompts], None, {}

    return PretokenizedGRPOTrainer, GRPOConfig


__all__ = ["GRPO", "GRPOParams"]
