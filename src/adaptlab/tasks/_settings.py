"""The ``task:`` settings of text classification and generation (prompts, label words, decoding, forgetting).

Every task declares its settings model (``Task.Settings``); these two tasks share this one. The ladder spec
validates ``task:`` with the model of the task its ``type`` names.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from adaptlab.errors import did_you_mean
from adaptlab.judging.settings import JudgesSpec
from adaptlab.specs import Label, Spec, check_seed


class GenerationSpec(Spec):
    """How rungs that write text decode: greedy by default; sampling or beam search when asked."""

    max_new_tokens: int = Field(64, gt=0, le=8192, description="Most tokens generated per example.")
    do_sample: bool = Field(False, description="Sample the next token (temperature/top_k/top_p) instead of greedy.")
    num_beams: int = Field(1, ge=1, le=64, description="Beam search with this many beams (1: no beam search).")
    temperature: float = Field(1.0, gt=0, le=100, description="Divide the logits by this when sampling.")
    top_k: int | None = Field(None, ge=1, description="Sample only among the k most likely tokens.")
    top_p: float | None = Field(None, gt=0, le=1, description="Sample only among the most likely tokens whose "
                                "probabilities sum to p (nucleus sampling).")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="Penalise tokens already in the text (>1).")
    stop: list[str] = Field(default_factory=list, description="Stop strings: generation ends at the first one, "
                            "which is cut from the output (end-of-sequence tokens always stop).")
    seed: int | None = Field(None, description="Seed for sampling (default: the ladder's seed).")
    batch_size: int = Field(16, gt=0, description="Prompts generated together (left-padded for decoders).")

    _seed = field_validator("seed")(check_seed)

    @field_validator("stop")
    @classmethod
    def _non_empty_stops(cls, v: list[str]) -> list[str]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must not be empty")
        return v


#: Placeholders a prompt template may use; `{text}` is required.
TEMPLATE_FIELDS = ("text", "text_pair", "labels")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TaskSpec(Spec):
    """What is being learned."""

    type: str = Field("classification", description="A registered task: see `adaptlab methods`.")
    labels: list[Label] | None = Field(None, description="Label order (default: sorted label values). Each is read "
                                       "as a label cell is: 1 and 1.0 are \"1\", True and TRUE are \"true\".")
    label_descriptions: dict[Label, str] | None = Field(
        None, description="Natural-language description per label, for zero-shot rungs (default: the label itself)."
    )
    template: str | None = Field(
        None,
        description="Prompt template of the generative rungs, with a `{text}` placeholder (also `{text_pair}` and "
        "`{labels}`, the label words joined by ', '). Put the instruction last. Default: `{text}` for generation; "
        "for classification the text followed by 'Answer with one of: {labels}.'",
    )
    system_prompt: str | None = Field(None, description="System message of generative rungs when the chat template "
                                      "is used (default: the chat template's own, if any).")
    chat_template: bool | None = Field(
        None, description="Wrap prompts in the tokenizer's chat template (default: when the tokenizer has one)."
    )
    label_words: dict[Label, str] | None = Field(
        None, description="Classification by generation: the answer text scored (or parsed) for each label "
        "(default: the label itself). They must differ from each other."
    )
    truncate_input: Literal["start", "end"] = Field(
        "end", description="Generative rungs: which end of the input text is cut when prompt + answer exceed "
        "data.max_length ('start' keeps the most recent turns of a dialogue)."
    )
    primary_metric: str | None = Field(
        None, description="Generation: the metric that ranks the rungs (default rougeL; also rouge1, rouge2, "
        "rougeLsum, bleu, chrf, exact_match, perplexity, and the metrics of the configured judges). Classification "
        "always ranks by macro_f1."
    )
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Decoding settings.")
    forgetting_text: str | None = Field(
        "hamlet", description="General text on which every generative rung's perplexity is compared with the base "
        "model's (forgetting): a builtin text (hamlet) or a UTF-8 text file; null turns the check off."
    )
    forgetting_tokens: int = Field(1024, gt=1, le=65536, description="Tokens from the start of forgetting_text "
                                   "that are scored (a fixed slice, so the check stays cheap).")

    @field_validator("template")
    @classmethod
    def _template_placeholders(cls, v: str | None) -> str | None:
        if v is None:
            return v
        names = _PLACEHOLDER.findall(v)
        unknown = [n for n in names if n not in TEMPLATE_FIELDS]
        if unknown:
            hint = did_you_mean(unknown[0], TEMPLATE_FIELDS)
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}}.{hint} A template may use {{text}}, {{text_pair}}, {{labels}}"
            )
        if "text" not in names:
            raise ValueError("the template has no {text} placeholder, so the input would never reach the model; "
                             "add {text} where the input goes, e.g. 'Review: {text}\\nIs it positive or negative?'")
        return v

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, v: list[str] | None) -> list[str] | None:
        repeated = sorted({label for label in v or [] if (v or []).count(label) > 1})
        if repeated:
            raise ValueError(f"{', '.join(map(repr, repeated))} listed more than once; list each label once (a "
                             "repeat would be a class of its own that no row has)")
        return v

    @field_validator("label_words")
    @classmethod
    def _distinct_words(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        empty = [k for k, w in v.items() if not w.strip()]
        if empty:
            raise ValueError(f"label word of {empty[0]!r} is empty; give every label a word to score")
        seen: dict[str, str] = {}
        for label, word in v.items():
            key = word.strip().casefold()
            if key in seen:
                raise ValueError(f"labels {seen[key]!r} and {label!r} have the same word {word!r}; constrained "
                                 "choice cannot tell them apart")
            seen[key] = label
        return v

    @field_validator("primary_metric")
    @classmethod
    def _known_metric(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from adaptlab.evaluation.metrics import METRICS

        if v not in METRICS:
            names = METRICS.names()
            raise ValueError(f"unknown metric.{did_you_mean(v, names)} Metrics: {', '.join(names)}")
        return v


class GenerationSettings(TaskSpec):
    """The generation task's settings: :class:`TaskSpec` and the judges of its rungs' outputs."""

    judges: JudgesSpec | None = Field(
        None, description="Judges of every generative rung's test outputs (see adaptlab.judging): reward scoring "
        "by a finished run, an LLM as pairwise judge, MMLU through lm-eval. Their metrics (reward_mean, "
        "reward_win_rate, judge_win_rate, judge_order_agreement, mmlu_accuracy) may be the primary_metric."
    )
