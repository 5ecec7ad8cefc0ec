"""Shared body of the preference rungs (base_preference, dpo, orpo, reward_model): the pre-flight check of prompt
lengths, and the trl trainers fed adaptlab's own token ids.

A pair is encoded once by the rung's formatter (:func:`adaptlab.methods._pairs.encode_pair`). trl trains on exactly
these ids (its own tokenisation is skipped: :func:`dpo_trainer_class`, :func:`orpo_trainer_class`; RewardTrainer
takes tokenised pairs as they are), and the task scores the same ids, so what a rung learned and what it is measured
on cannot drift apart.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.generation import lm
from adaptlab.generation.formatting import Formatter, resolve_style
from adaptlab.methods._causal import task_spec
from adaptlab.methods._pairs import encode_pairs
from adaptlab.runtime import TRAINER_OPTIONS

#: Rows named in one problem before "and N more".
MAX_LISTED = 5


# -- pre-flight ----------------------------------------------------------------------------------------------------


def build_formatter(ctx: RunContext, chat_data: bool = False) -> tuple[Formatter, str, int | None]:
    """(the formatter a preference rung encodes pairs with, the model kind, its context window), without loading
    weights; UserError when the model can't generate text or the prompt settings don't fit its tokenizer."""
    config = lm.load_config(ctx.model, ctx.trust_remote_code)
    tokenizer = lm.load_tokenizer(ctx.model.location, ctx.trust_remote_code)
    kind = lm.require_generative(config, ctx.model_spec, "preference")
    style = resolve_style(task_spec(ctx), tokenizer, kind, (), chat_data=chat_data)
    return Formatter(tokenizer, style, kind, ctx.max_length), kind, lm.context_window(config, tokenizer)


def pair_problems(ctx: RunContext, data: Any) -> list[str]:
    """What makes pairs unusable for this model, named by file and row: prompts longer than its context window, and
    pairs whose two responses are the same once cut to data.max_length."""
    try:
        formatter, _, window = build_formatter(ctx, chat_data=data.meta().get("format") == "chat")
    except UserError as e:
        return [str(e)]
    problems = long_prompt_problems(formatter, window, ctx, data)
    try:
        return problems + same_after_cut_problems(formatter, data)
    except UserError as e:  # a prompt's markup alone fills data.max_length
        return [*problems, str(e)]


def same_after_cut_problems(formatter: Formatter, data: Any) -> list[str]:
    """Pairs whose chosen and rejected responses are the same token ids within data.max_length: what told them
    apart was cut off, so no rung can learn or score anything from them."""
    problems = []
    for name in ("train", "validation", "test"):
        split = getattr(data, name)
        same = [i for i, pair in enumerate(encode_pairs(formatter, split.prompts, split.chosen, split.rejected))
                if pair.chosen_ids == pair.rejected_ids]
        if same:
            problems.append(f"{split.source or name}: the chosen and rejected responses of row(s) "
                            f"{_listed(split, same)} ({name} split) are the same within data.max_length "
                            f"({formatter.max_length} tokens): what tells them apart is cut off. Raise "
                            "data.max_length, or shorten or drop these rows.")
    return problems


def _listed(split: Any, positions: list[int]) -> str:
    """The ids of the split's rows at ``positions``: the first few, then how many more."""
    more = f" and {len(positions) - MAX_LISTED} more" if len(positions) > MAX_LISTED else ""
    return ", ".join(split.ids[i] for i in positions[:MAX_LISTED]) + more


def long_prompt_problems(formatter: Formatter, window: int | None, ctx: RunContext, data: Any) -> list[str]:
    """Pairs whose prompt alone (as the model sees it: template and chat markup included) is longer than the model's
    context window, named by file and row. Prompts within the window but over data.max_length are cut instead."""
    if not window:
        return []
    problems = []
    for name in ("train", "validation", "test"):
        split = getattr(data, name)
        if not len(split):
            continue
        texts = split.prompt_texts()
        raw = formatter.tokenizer(texts, add_special_tokens=False)["input_ids"]
        overhead = len(formatter.prompt_ids(split.prompts[0])) - len(raw[0])
        long = [i for i, ids in enumerate(raw) if len(ids) + overhead > window
                and len(formatter.prompt_ids(split.prompts[i])) > window]
        if long:
            problems.append(f"{split.source or name}: the prompt of row(s) {_listed(split, long)} ({name} split) is "
                            f"longer than the {window}-token context window of '{ctx.model_spec}'; shorten these "
                            "prompts or drop the rows.")
    return problems


class PreferenceRung:
    """Mixin of the rungs written for the preference task: its pre-flight check adds the prompt lengths."""

    tasks: ClassVar[frozenset[str]] = frozenset({"preference"})
    #: trl's pair trainers: no padding-free batches (a pair is two sequences)
    runtime_options: ClassVar[frozenset[str]] = TRAINER_OPTIONS
    four_bit_variant: ClassVar[str | None] = None  # no 4-bit preference rung (yet)

    @classmethod
    def check(cls, params: BaseModel, ctx: RunContext, data: Any) -> list[str]:
        return super().check(params, ctx, data) + pair_problems(ctx, data)  # type: ignore[misc]


def check_grouping(params: Any, rung: str) -> None:
    """UserError when a preference rung is asked to group batches by length (a pair has no single length)."""
    if params.group_by_length:
        raise UserError(f"{rung}.params.group_by_length: preference pairs can't be grouped by length; set it to "
                        "false.")


def causal_only(rung: str, ctx: RunContext, kind: str, instead: str = "base_preference / lm_lora") -> list[str]:
    """The trl trainers on adaptlab's token ids (DPO, ORPO, GRPO) train causal LMs only; ``instead``: the rungs to
    suggest for this model."""
    if kind == "causal":
        return []
    return [f"{rung} trains causal LMs only (trl's trainer on prompt + response sequences); '{ctx.model_spec}' is a "
            f"{kind} model. Use a causal LM such as smollm2, or {instead} on this model."]


class PairTrainingParams(BaseModel):
    """Fields every preference-trained rung adds to its training settings (mixed into their Params)."""

    beta: float = Field(0.1, gt=0, description="DPO: how far the policy may move from the reference (higher: less). "
                        "ORPO: the weight lambda of the odds-ratio term next to the SFT loss.")


# -- trl trainers fed adaptlab's token ids ----------------------------------------------------------------------------


@functools.cache
def dpo_trainer_class() -> tuple[type, type]:
    """(DPOTrainer taking tokenised pairs as they are, DPOConfig)."""
    from trl import DPOConfig, DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer on pairs adaptlab tokenised (prompt_ids / chosen_ids / rejected_ids)."""

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            return dataset

    return PretokenizedDPOTrainer, DPOConfig


@functools.cache
def orpo_trainer_class() -> tuple[type, type]:
    """(ORPOTrainer (trl.experimental) taking tokenised pairs, ORPOConfig); the experimental-API warning is
    silenced: the trainer is pinned with trl."""
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    class PretokenizedORPOTrainer(ORPOTrainer):
        """ORPOTrainer on pairs adaptlab tokenised: each row's sequences and labels (-100 on the prompt)."""

        def tokenize_row(self, feature: dict, model: Any = None) -> dict:
            prompt = list(feature["prompt_ids"])
            out: dict[str, list[int]] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
            for name in ("chosen", "rejected"):
                answer = list(feature[f"{name}_ids"])
                out[f"{name}_input_ids"] = prompt + answer
                out[f"{name}_attention_mask"] = [1] * (len(prompt) + len(answer))
                out[f"{name}_labels"] = [-100] * len(prompt) + answer
            return out

    return PretokenizedORPOTrainer, ORPOConfig


def trl_args(ctx: RunContext, **extra: Any) -> dict[str, Any]:
    """The trl config fields every preference trainer gets: adaptlab's length budget (data.max_length). Activation
    checkpointing (trl turns it on by default) comes from the rung's runtime, like every Trainer field."""
    return {"max_length": ctx.max_length, **extra}
