"""Preference pairs as the token ids a generative rung trains on and scores: one prompt, two responses.

A pair is encoded once by the rung's :class:`~adaptlab.generation.formatting.Formatter` (template, chat template,
system prompt, truncation to data.max_length): the prompt and each response as the assistant's turn, end-of-turn
token included (:func:`encode_pair`), and scored as the generative rungs score answers (:func:`pair_logprobs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adaptlab.generation import lm
from adaptlab.generation.formatting import Encoded, Formatter, Input


@dataclass(frozen=True)
class PairIds:
    """One pair as token ids: the shared prompt, then each response (the tokens scored and trained on)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    cut_tokens: int = 0


def encode_pair(formatter: Formatter, prompt: Input, chosen: str, rejected: str) -> PairIds:
    """The pair within data.max_length: both responses after one prompt (cut as much as the longer response
    needs; a response alone longer than the budget is cut at its end, as the formatter does)."""
    c, r = formatter.encode(prompt, None, chosen), formatter.encode(prompt, None, rejected)
    if c.prompt_ids == r.prompt_ids:
        return PairIds(c.prompt_ids, c.answer_ids, r.answer_ids, max(c.cut_tokens, r.cut_tokens))
    short = c if len(c.prompt_ids) <= len(r.prompt_ids) else r
    room = formatter.max_length - len(short.prompt_ids)
    return PairIds(short.prompt_ids, c.answer_ids[:room], r.answer_ids[:room], max(c.cut_tokens, r.cut_tokens))


def encode_pairs(formatter: Formatter, prompts: Sequence[Input], chosen: Sequence[str],
                 rejected: Sequence[str]) -> list[PairIds]:
    return [encode_pair(formatter, p, c, r) for p, c, r in zip(prompts, chosen, rejected, strict=True)]


def pair_logprobs(method: Any, model: torch.nn.Module, pairs: Sequence[PairIds]) -> tuple[np.ndarray, ...]:
    """(sum log-prob of each chosen response, its token count, the same for each rejected one) under ``model``,
    scored as the generative rungs score answers (:func:`adaptlab.generation.lm.answer_logprobs`)."""
    examples = [Encoded(p.prompt_ids, p.chosen_ids) for p in pairs] + [Encoded(p.prompt_ids, p.rejected_ids)
                                                                       for p in pairs]
    model.eval()
    sums, counts = lm.answer_logprobs(model, method.kind, examples, pad_id=method.tokenizer.pad_token_id,
                                      batch_size=method.score_batch_size, device=method.ctx.torch_device,
                                      virtual_tokens=method.virtual_tokens)
    n = len(pairs)
    return sums[:n], counts[:n], sums[n:], counts[n:]


def preference_dataset(pairs: Sequence[PairIds]) -> Any:
    """A datasets.Dataset of prompt_ids / chosen_ids / rejected_ids (trl's tokenised preference columns)."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt_ids": [p.prompt_ids for p in pairs], "chosen_ids": [p.chosen_ids for p in pairs],
                              "rejected_ids": [p.rejected_ids for p in pairs]})


def pair_tokens(pairs: Sequence[PairIds]) -> int:
    """Tokens of every sequence a pair trains on (prompt + chosen, prompt + rejected)."""
    return int(sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs))
