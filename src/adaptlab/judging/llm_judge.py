"""LLM as judge: a causal LM compares a rung's response with the ``against`` rung's response to the same prompt.

The decision is read from log-probabilities, never from free text: after a fixed prompt (:data:`PROMPT`, in the
judge's chat template when its tokenizer has one) the judge scores the answers "A", "B" and "tie"; the most likely
one is its verdict. Each pair is judged in both orders (the rung's response first, then second), which cancels a
judge's preference for a position: the rung scores 1 for a win, 0.5 for a tie, 0 for a loss in each order, and
the mean of the two is its score on that example. ``judge_win_rate`` is the mean over examples (0.5: no better
than the other rung); ``judge_order_agreement`` is the share of judged pairs whose two verdicts agree once the
order is undone (a judge that always answers "A" agrees on none). Identical responses are ties without asking.

A 135M judge (SmolLM2-135M) is weak: its verdicts are close to chance and driven by position and length, so read
its order agreement first; a win rate whose interval contains 0.5 says nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from adaptlab.errors import UserError
from adaptlab.evaluation.stats import bootstrap_mean
from adaptlab.runtime import kernels_of

PROMPT = ("Compare two responses to the same prompt and say which one is better: more helpful, relevant and "
          "fluent.\n\nPrompt: {prompt}\n\nResponse A: {a}\n\nResponse B: {b}\n\nWhich response is better? "
          "Answer A, B or tie.")
ANSWERS = ("A", "B", "tie")
#: (judge prompts, each (prompt, response A, response B)) -> log-prob of each answer, shape (n, 3)
LogProbs = Callable[[Sequence[tuple[str, str, str]]], np.ndarray]
WEAK_JUDGE_NOTE = ("A small judge (e.g. the 135M SmolLM2) is weak: near chance, swayed by position and length. "
                   "Trust its win rate only when its order agreement is high and the interval excludes 0.5.")


def verdicts(logprobs: LogProbs, items: Sequence[tuple[str, str, str]]) -> list[str]:
    """The judge's answer ("A", "B" or "tie") for each (prompt, A, B)."""
    if not items:
        return []
    scores = np.asarray(logprobs(items), dtype=np.float64)
    return [ANSWERS[int(i)] for i in scores.argmax(axis=1)]


def judge(logprobs: LogProbs, prompts: Sequence[str], outputs: Sequence[str], against: Sequence[str],
          seed: int) -> dict:
    """judge_win_rate (with interval) and judge_order_agreement of ``outputs`` against ``against``."""
    todo = [i for i, (a, b) in enumerate(zip(outputs, against)) if a.strip() != b.strip()]
    first = verdicts(logprobs, [(prompts[i], outputs[i], against[i]) for i in todo])  # the rung is A
    second = verdicts(logprobs, [(prompts[i], against[i], outputs[i]) for i in todo])  # the rung is B
    as_a, as_b = {"A": 1.0, "tie": 0.5, "B": 0.0}, {"B": 1.0, "tie": 0.5, "A": 0.0}
    scores = np.full(len(outputs), 0.5)
    agree = []
    for i, v1, v2 in zip(todo, first, second):
        scores[i] = (as_a[v1] + as_b[v2]) / 2
        agree.append(float(as_a[v1] == as_b[v2]))
    metrics = {"judge_win_rate": float(scores.mean()) if len(scores) else 0.5}
    interval = {"judge_win_rate": list(bootstrap_mean(scores, seed=seed))} if len(scores) else {}
    if agree:
        metrics["judge_order_agreement"] = float(np.mean(agree))
        interval["judge_order_agreement"] = list(bootstrap_mean(agree, seed=seed))
    counts = {f"{v}_first": first.count(v) for v in ANSWERS} | {f"{v}_second": second.count(v) for v in ANSWERS}
    return {"metrics": metrics, "interval": interval,
            "detail": {"n": len(outputs), "judged": len(todo), "identical": len(outputs) - len(todo),
                       "verdicts": counts, "note": WEAK_JUDGE_NOTE}}


class LMJudge:
    """A causal LM as judge: :meth:`logprobs` is its :data:`LogProbs`."""

    def __init__(self, spec: Any, device: str):
        from adaptlab.generation import lm
        from adaptlab.models import resolve_model

        self.spec, self.device = spec, device
        resolved = resolve_model(spec.model)
        config = lm.load_config(resolved)
        if lm.model_kind(config) != "causal":
            raise UserError(f"task.judges.llm_judge.model: '{spec.model}' is not a causal LM; give a decoder such "
                            "as smollm2.")
        self.tokenizer = lm.load_tokenizer(resolved.location)
        self.window = lm.context_window(config, self.tokenizer)
        self.model = lm.load_model(resolved, "causal", spec.dtype).to(device).eval()
        self.half = lm.in_half(resolved, spec.dtype)

    def _prompt_ids(self, text: str) -> list[int]:
        tok = self.tokenizer
        if tok.chat_template:
            text = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                           tokenize=False)
            return tok(text, add_special_tokens=False)["input_ids"]
        return tok(text + "\nAnswer:", add_special_tokens=True)["input_ids"]

    def logprobs(self, items: Sequence[tuple[str, str, str]]) -> np.ndarray:
        from adaptlab.generation import lm
        from adaptlab.generation.formatting import Encoded

        n = self.spec.max_chars
        answers = [self.tokenizer(" " + a if not self.tokenizer.chat_template else a,
                                  add_special_tokens=False)["input_ids"] for a in ANSWERS]
        encoded = []
        for prompt, a, b in items:
            ids = self._prompt_ids(PROMPT.format(prompt=prompt[-n:], a=a[:n], b=b[:n]))
            if self.window:
                ids = ids[-(self.window - max(map(len, answers))):]
            encoded += [Encoded(ids, ans) for ans in answers]
        with kernels_of(self.device, self.half):  # its own, inside whichever rung it judges
            sums, _ = lm.answer_logprobs(self.model, "causal", encoded, pad_id=self.tokenizer.pad_token_id or 0,
                                         batch_size=self.spec.batch_size, device=self.device)
        return sums.reshape(-1, len(ANSWERS))
