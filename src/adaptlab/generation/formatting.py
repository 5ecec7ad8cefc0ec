"""From an input (and its answer) to the token ids a generative model sees, with the answer tokens marked.

Every generative rung goes through :meth:`Formatter.encode`, so training (loss on the answer only), constrained
choice (log-likelihood of each label's answer) and reference perplexity all see the same text:

- causal LM with a chat template: the prompt is the chat up to the assistant's turn (``add_generation_prompt``);
  the answer is what the template writes for the assistant turn (content plus end-of-turn token);
- causal LM without one (or ``task.chat_template: false``): the rendered template, then the answer after one
  space (none when the prompt ends in whitespace), then the end-of-sequence token;
- seq2seq (T5, BART): the rendered template is the encoder input and the answer the decoder target.

Inputs are texts (rendered through ``task.template``) or chat messages (a list of ``{role, content}`` before the
answer; used as they are). When prompt + answer exceed the token budget (``data.max_length``) the input text is cut
(at the end, or the start with ``task.truncate_input: start``), the instruction and answer are kept; the number of
tokens cut is recorded in :attr:`Encoded.cut_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jinja2 import TemplateError

from adaptlab.errors import UserError

Message = dict[str, str]
Input = str | list[Message]
Kind = Literal["causal", "seq2seq"]

DEFAULT_GENERATION_TEMPLATE = "{text}"
DEFAULT_CLASSIFICATION_TEMPLATE = "{text}\n\nAnswer with one of: {labels}."
_PLACEHOLDER = re.compile(r"\{(text|text_pair|labels)\}")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Demo:
    """One in-context example: an input (text or messages), its optional pair text, and the answer."""

    input: Input
    answer: str
    pair: str | None = None


@dataclass
class Encoded:
    """Token ids of one example: the prompt, then the answer the loss (or the score) is computed on."""

    prompt_ids: list[int]
    answer_ids: list[int] = field(default_factory=list)
    cut_tokens: int = 0
    cut_answer_tokens: int = 0

    @property
    def input_ids(self) -> list[int]:
        """Causal LM input: prompt then answer."""
        return self.prompt_ids + self.answer_ids

    @property
    def labels(self) -> list[int]:
        """Causal LM labels: -100 (no loss) on every prompt token, the token id on every answer token."""
        return [IGNORE_INDEX] * len(self.prompt_ids) + list(self.answer_ids)


@dataclass(frozen=True)
class PromptStyle:
    """How inputs become prompts: the template, system prompt, chat template on/off and label words."""

    template: str
    system_prompt: str | None = None
    chat: bool = False
    truncate_input: Literal["start", "end"] = "end"
    label_words: tuple[str, ...] = ()

    @property
    def labels_text(self) -> str:
        return ", ".join(self.label_words)


def render_template(template: str, text: str, pair: str | None = None, labels: str = "") -> str:
    """Fill ``{text}``, ``{text_pair}`` and ``{labels}`` in one pass (braces inside the values stay as they are)."""
    values = {"text": text, "text_pair": pair or "", "labels": labels}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_style(task: Any, tokenizer: Any, kind: Kind, label_words: Sequence[str] = (),
                  chat_data: bool = False) -> PromptStyle:
    """The prompt style for ``task`` (a TaskSpec) on this tokenizer; UserError when they don't fit together."""
    default = DEFAULT_CLASSIFICATION_TEMPLATE if label_words else DEFAULT_GENERATION_TEMPLATE
    template = task.template or default
    has_template = has_chat_template(tokenizer)
    chat = task.chat_template if task.chat_template is not None else (kind == "causal" and has_template)
    if chat and kind != "causal":
        raise UserError("task.chat_template: chat templates are for causal LMs; this is a seq2seq model. "
                        "Set task.chat_template: false.")
    if chat and not has_template:
        raise UserError("task.chat_template is true but the model's tokenizer has no chat template. Set "
                        "task.chat_template: false (the prompt is then the template text), or use a chat model.")
    if chat_data and not chat:
        why = "it is a seq2seq model" if kind != "causal" else "the chat template is off or missing"
        raise UserError(f"the data are chat messages (data.messages_column) but {why}. Give prompt/completion "
                        "columns instead, or use a causal LM whose tokenizer has a chat template.")
    return PromptStyle(template, task.system_prompt, bool(chat), task.truncate_input, tuple(label_words))


class Formatter:
    """Renders and tokenises examples for one tokenizer, model kind, prompt style and token budget."""

    def __init__(self, tokenizer: Any, style: PromptStyle, kind: Kind, max_length: int):
        self.tokenizer = tokenizer
        self.style = style
        self.kind = kind
        self.max_length = max_length

    # -- text ----------------------------------------------------------------------------------------------------
    def user_text(self, text: str, pair: str | None = None) -> str:
        return render_template(self.style.template, text, pair, self.style.labels_text)

    def messages(self, x: Input, pair: str | None = None, demos: Sequence[Demo] = ()) -> list[Message]:
        """The chat before the answer: system prompt, demonstrations as earlier turns, then the input."""
        msgs: list[Message] = []
        own_system = isinstance(x, list) and bool(x) and x[0].get("role") == "system"
        if self.style.system_prompt and not own_system:
            msgs.append({"role": "system", "content": self.style.system_prompt})
        for d in demos:
            msgs += self._turn(d.input, d.pair)
            msgs.append({"role": "assistant", "content": d.answer})
        msgs += self._turn(x, pair) if not own_system else list(x)
        return msgs

    def _turn(self, x: Input, pair: str | None) -> list[Message]:
        if isinstance(x, str):
            return [{"role": "user", "content": self.user_text(x, pair)}]
        return [m for m in x if m.get("role") != "system"]

    def prompt_text(self, x: Input, pair: str | None = None, demos: Sequence[Demo] = ()) -> str:
        """The text the model sees before its answer."""
        if self.style.chat:
            return self.tokenizer.apply_chat_template(
                self.messages(x, pair, demos), tokenize=False, add_generation_prompt=True
            )
        if not isinstance(x, str):
            raise UserError("chat messages need the chat template (task.chat_template).")
        blocks = [self._plain_block(d.input, d.pair, d.answer) for d in demos]
        blocks.append(self.user_text(x, pair))
        prefix = f"{self.style.system_prompt}\n\n" if self.style.system_prompt else ""
        return prefix + "\n\n".join(blocks)

    def _plain_block(self, x: Input, pair: str | None, answer: str) -> str:
        if not isinstance(x, str):
            raise UserError("chat messages need the chat template (task.chat_template).")
        prompt = self.user_text(x, pair)
        return prompt + _separator(prompt) + answer

    # -- ids -----------------------------------------------------------------------------------------------------
    def prompt_ids(self, x: Input, pair: str | None = None, demos: Sequence[Demo] = ()) -> list[int]:
        text = self.prompt_text(x, pair, demos)
        special = not self.style.chat  # a chat template writes its own special tokens
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def answer_ids(self, x: Input, pair: str | None, answer: str, demos: Sequence[Demo] = ()) -> list[int]:
        """Token ids of the answer as the model should produce it, end-of-turn/sequence token included."""
        tok = self.tokenizer
        if self.kind == "seq2seq":
            return list(tok(answer, add_special_tokens=True)["input_ids"])
        if self.style.chat:
            msgs = self.messages(x, pair, demos)
            prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": answer}], tokenize=False)
            text = full[len(prompt):] if full.startswith(prompt) else answer + (tok.eos_token or "")
            ids = list(tok(text, add_special_tokens=False)["input_ids"])
            eos = tok.eos_token_id
            if eos in ids:  # drop what the template writes after the end of the turn (a newline)
                ids = ids[: ids.index(eos) + 1]
            return ids
        prompt = self.prompt_text(x, pair, demos)
        ids = list(tok(_separator(prompt) + answer, add_special_tokens=False)["input_ids"])
        return ids + ([tok.eos_token_id] if tok.eos_token_id is not None else [])

    def encode(self, x: Input, pair: str | None = None, answer: str | None = None,
               demos: Sequence[Demo] = ()) -> Encoded:
        """Prompt (and answer) ids within ``max_length`` tokens, cutting the input text if they don't fit."""
        answer_ids = self.answer_ids(x, pair, answer, demos) if answer is not None else []
        ids = self.prompt_ids(x, pair, demos)
        if len(ids) + len(answer_ids) <= self.max_length:
            return Encoded(ids, answer_ids)
        floor = len(self._emptied_prompt(x, pair, demos))
        cut_answer = 0
        if floor + 1 + len(answer_ids) > self.max_length:
            keep = self.max_length - floor - 1
            if keep < 1:
                raise UserError(
                    f"the prompt without its input already takes {floor} tokens (template, system prompt, "
                    f"chat markup{', examples' if demos else ''}), leaving no room in the {self.max_length}-token "
                    "budget (data.max_length). Raise data.max_length or shorten task.template/task.system_prompt."
                )
            cut_answer = len(answer_ids) - keep
            answer_ids = answer_ids[:keep]
        ids, cut = self._cut_input(x, pair, demos, self.max_length - len(answer_ids))
        return Encoded(ids, answer_ids, cut_tokens=cut, cut_answer_tokens=cut_answer)

    # -- truncation ----------------------------------------------------------------------------------------------
    def _emptied_prompt(self, x: Input, pair: str | None, demos: Sequence[Demo]) -> list[int]:
        if isinstance(x, str):
            return self.prompt_ids("", "" if pair is not None else None, demos)
        last = [i for i, m in enumerate(x) if m.get("role") != "system"][-1:]
        kept = [({**m, "content": ""} if i in last else m) for i, m in enumerate(x)
                if m.get("role") == "system" or i in last]
        return self.prompt_ids(kept, None, demos)

    def _cut_input(self, x: Input, pair: str | None, demos: Sequence[Demo], budget: int) -> tuple[list[int], int]:
        if not isinstance(x, str):
            return self._cut_messages(x, demos, budget)
        if pair is not None and len(pair) > len(x):
            return self._shrink(pair, lambda cut: self.prompt_ids(x, cut, demos), budget)
        return self._shrink(x, lambda cut: self.prompt_ids(cut, pair, demos), budget)

    def _cut_messages(self, x: list[Message], demos: Sequence[Demo], budget: int) -> tuple[list[int], int]:
        """Drop the oldest turns first, the fewest that make the prompt fit; if the last one alone is too long, cut
        its content. With the system messages all ahead of the turns, each dropped turn only shortens the prompt, so
        the fewest is found by bisection (a long conversation costs a few renders, not one per turn)."""
        turns = [i for i, m in enumerate(x) if m.get("role") != "system"]

        def without(k: int) -> list[Message]:  # the conversation less its k oldest turns
            gone = set(turns[:k])
            return [m for i, m in enumerate(x) if i not in gone]

        refused: list[int] = []

        def fits(k: int) -> bool:
            try:
                return len(self.prompt_ids(without(k), None, demos)) <= budget
            except TemplateError:  # e.g. a template that wants the user first: this cut is no prompt
                refused.append(k)
                return False

        last = max(0, len(turns) - 1)  # dropping this many keeps the last turn only
        low, high = 0, last
        if not turns or all(m.get("role") != "system" for m in x[turns[0]:]):  # the system messages lead
            while low < high:
                mid = (low + high) // 2
                low, high = (low, mid) if fits(mid) else (mid + 1, high)
        if refused or low < high:
            # a system message among the turns (dropping the turns before it can lengthen the prompt), or cuts the
            # template refused: one turn at a time, the first cut that renders and fits
            low = next((k for k in range(last) if fits(k)), last)
        dropped_turns = low
        msgs = without(dropped_turns)
        ids = self.prompt_ids(msgs, None, demos)
        dropped = sum(len(self.tokenizer(x[i].get("content", ""), add_special_tokens=False)["input_ids"])
                      for i in turns[:dropped_turns])
        if len(ids) <= budget:
            return ids, dropped
        if not turns:
            raise UserError(f"cannot fit the system prompt into {budget} tokens (data.max_length); shorten it.")
        kept = next(i for i, m in enumerate(msgs) if m.get("role") != "system")

        def render(content: str) -> list[int]:
            return self.prompt_ids([*msgs[:kept], {**msgs[kept], "content": content}, *msgs[kept + 1:]], None, demos)

        ids, cut = self._shrink(msgs[kept].get("content", ""), render, budget)
        return ids, dropped + cut

    def _shrink(self, text: str, render: Any, budget: int) -> tuple[list[int], int]:
        """Cut ``text`` token by token (from the configured end) until ``render(text)`` fits ``budget``."""
        tokens = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = render(text)
        keep = len(tokens) - (len(ids) - budget)
        while keep >= 0:
            ids = render(self._keep(tokens, keep))
            if len(ids) <= budget:
                return ids, len(tokens) - keep
            keep -= max(1, len(ids) - budget)
        raise UserError(f"cannot fit the prompt into {budget} tokens (data.max_length); raise data.max_length.")

    def _keep(self, tokens: list[int], keep: int) -> str:
        kept = tokens[len(tokens) - keep:] if self.style.truncate_input == "start" else tokens[:keep]
        return self.tokenizer.decode(kept) if keep > 0 else ""

    # -- display -------------------------------------------------------------------------------------------------
    def marked(self, enc: Encoded, open_mark: str = "[[", close_mark: str = "]]") -> str:
        """The example as text with the answer (the tokens the loss or the score is on) between marks."""
        decode = self.tokenizer.decode
        answer = f"{open_mark}{decode(enc.answer_ids)}{close_mark}"
        if self.kind == "seq2seq":
            return f"encoder input:\n{decode(enc.prompt_ids)}\n\ndecoder target:\n{answer}"
        return decode(enc.prompt_ids) + answer


def _separator(prompt: str) -> str:
    return "" if not prompt or prompt[-1].isspace() else " "
