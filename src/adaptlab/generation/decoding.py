"""Text generation: batched (left padding for decoders, KV cache on), and the token-at-a-time ``--explain`` view.

Decoding follows :class:`adaptlab.config.GenerationSpec`: greedy unless ``do_sample`` (temperature, top-k, top-p)
or ``num_beams > 1``; a repetition penalty; stop strings, after which the output is cut; a seed for sampling.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from adaptlab.distributed import predicting
from adaptlab.errors import UserError


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a generation: the generation config's, the model config's and the tokenizer's
    end-of-sequence tokens. The ladder, the server and the ONNX export all stop on exactly these."""
    ids: set[int] = set()
    configs = (getattr(model, "generation_config", None), getattr(model, "config", None))
    for value in (*(getattr(c, "eos_token_id", None) for c in configs), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)


def generation_config(model: Any, tokenizer: Any, settings: Any) -> Any:
    """A transformers GenerationConfig for ``settings`` (a GenerationSpec), starting from the model's own."""
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    gc = copy.deepcopy(base) if base is not None else GenerationConfig()
    sample = bool(settings.do_sample)
    gc.update(
        max_new_tokens=settings.max_new_tokens,
        do_sample=sample,
        num_beams=settings.num_beams,
        temperature=settings.temperature if sample else None,
        top_k=(settings.top_k or 0) if sample else None,
        top_p=(settings.top_p if settings.top_p is not None else 1.0) if sample else None,
        repetition_penalty=settings.repetition_penalty,
        stop_strings=list(settings.stop) or None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids(model, tokenizer),
        use_cache=True,
        num_return_sequences=1,
    )
    return gc


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def _right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([list(r) + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    return ids, mask


@predicting
def generate_ids(model: Any, tokenizer: Any, kind: str, prompts: Sequence[Sequence[int]], settings: Any, *,
                 seed: int, device: str = "cpu") -> list[list[int]]:
    """The new token ids for each prompt (prompt excluded). Prompts of similar length are batched together."""
    gc = generation_config(model, tokenizer, settings)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    torch.manual_seed(seed)
    for start in range(0, len(order), settings.batch_size):
        idx = order[start : start + settings.batch_size]
        rows = [prompts[i] for i in idx]
        pad = _right_pad if kind == "seq2seq" else left_pad  # decoders continue from the right end
        ids, mask = pad(rows, tokenizer.pad_token_id)
        kwargs: dict[str, Any] = {"generation_config": gc}
        if gc.stop_strings:
            kwargs["tokenizer"] = tokenizer
        with warnings.catch_warnings():  # peft's soft prompts ignore position ids, and say so on every call
            warnings.filterwarnings("ignore", message="Position ids are not supported")
            seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        seqs = seqs[:, 1:] if kind == "seq2seq" else seqs[:, ids.shape[1]:]  # drop decoder start / the prompt
        for row, i in enumerate(idx):
            out[i] = _until_end(seqs[row].tolist(), set(gc.eos_token_id or []), tokenizer.pad_token_id)
    return out


def _until_end(ids: list[int], eos: set[int], pad_id: int | None) -> list[int]:
    """Tokens up to and including the first end-of-sequence token; padding after it dropped."""
    for j, t in enumerate(ids):
        if t in eos:
            return ids[: j + 1]
    while ids and pad_id is not None and ids[-1] == pad_id and pad_id not in eos:
        ids = ids[:-1]
    return ids


def finish_text(tokenizer: Any, ids: Sequence[int], stop: Sequence[str] = ()) -> str:
    """Decoded text without special tokens, cut at the first stop string, stripped."""
    return visible_text(tokenizer, ids, stop)[0].strip()


def visible_text(tokenizer: Any, ids: Sequence[int], stop: Sequence[str] = ()) -> tuple[str, bool]:
    """(the text of ``ids`` without special tokens, cut before the earliest stop string; whether one was found).

    The one rule for what a generation shows: the ladder's predictions (:func:`finish_text`) and the server's
    streamed text are both this text."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    at = stop_index(text, stop)
    return (text, False) if at is None else (text[:at], True)


def stop_index(text: str, stop: Sequence[str]) -> int | None:
    """Where the earliest of the (non-empty) stop strings starts in ``text``, or None when none occurs."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(found) if found else None


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of the stop strings."""
    at = stop_index(text, stop)
    return text if at is None else text[:at]


# ------------------------------------------------------------------------------------------------------ explain


@dataclass
class Step:
    """One generation step: the chosen token, its probability, and the top candidates."""

    index: int
    token_id: int
    token: str
    probability: float
    top: list[tuple[str, float]]


def logits_processors(settings: Any) -> Any:
    """The next-token rule of ``settings`` (a GenerationSpec, or anything with its sampling fields) as transformers
    logits processors: the repetition penalty, then, when sampling, temperature, top-k and top-p.

    These are the processors ``model.generate`` builds from :func:`generation_config`, in its order, so a step
    taken with them (:func:`explain`, the server's decode loop) chooses what ``generate`` chooses."""
    from transformers.generation import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.do_sample:
        if settings.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            procs.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p is not None and settings.top_p < 1.0:
            procs.append(TopPLogitsWarper(settings.top_p))
    return procs


def pick(scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row of processed ``scores`` (shape [rows, 1]): the highest score (greedy), or a draw
    from their softmax (sampling; from ``generator``, or torch's global generator as ``generate`` does)."""
    if not do_sample:
        return scores.argmax(dim=-1, keepdim=True)
    return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)


def seeded_generator(seed: int | None, device: str = "cpu") -> torch.Generator | None:
    """A random generator of its own for one sampled sequence (None without a seed: torch's global one)."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


@torch.inference_mode()
def explain(model: Any, tokenizer: Any, kind: str, prompt_ids: Sequence[int], settings: Any, *, seed: int,
            top_k: int = 5, device: str = "cpu", use_cache: bool = True) -> list[Step]:
    """Generate one token at a time, recording the top ``top_k`` next tokens and their probabilities.

    Probabilities are those the choice is made from: after the repetition penalty and, when sampling, temperature,
    top-k and top-p. Greedy picks the most likely; sampling draws with the same seed as :func:`generate_ids`.
    """
    if settings.num_beams > 1:
        raise UserError("--explain follows one sequence at a time; use it with num_beams 1 (greedy or sampling).")
    procs = logits_processors(settings)
    stops = set(eos_ids(model, tokenizer))
    torch.manual_seed(seed)
    prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    if kind == "seq2seq":
        encoder_outputs = model.get_encoder()(input_ids=prompt)
        start = model.config.decoder_start_token_id
        history = torch.tensor([[start if start is not None else tokenizer.pad_token_id]], device=device)
    else:
        history = prompt
    past, step_input, steps, text_ids = None, history, [], []
    for i in range(settings.max_new_tokens):
        if kind == "seq2seq":
            out = model(encoder_outputs=encoder_outputs, decoder_input_ids=step_input if use_cache else history,
                        past_key_values=past, use_cache=use_cache)
        else:
            out = model(input_ids=step_input if use_cache else history, past_key_values=past, use_cache=use_cache)
        past = out.past_key_values if use_cache else None
        scores = procs(history, out.logits[:, -1, :].float())
        probs = torch.softmax(scores, dim=-1)
        chosen = pick(scores, settings.do_sample)
        values, indices = probs[0].topk(min(top_k, probs.shape[-1]))
        token_id = int(chosen[0, 0])
        steps.append(Step(i + 1, token_id, tokenizer.decode([token_id]), float(probs[0, token_id]),
                          [(tokenizer.decode([int(t)]), float(v)) for v, t in zip(values, indices)]))
        history = torch.cat([history, chosen], dim=-1)
        step_input = chosen
        text_ids.append(token_id)
        if token_id in stops:
            break
        if settings.stop and stop_index(tokenizer.decode(text_ids), settings.stop) is not None:
            break
    return steps
