"""The ``task:`` settings of the preference task: which columns hold the pairs, and how the generative rungs prompt.

The prompt settings (template, system prompt, chat template, truncation) mean what they mean for the generation
task: every generative rung renders a pair's prompt through the same :class:`~adaptlab.generation.formatting.
Formatter`, so what the preference rungs train on and what they are scored on are the same token ids.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from adaptlab.judging.settings import JudgesSpec
from adaptlab.specs import Spec
from adaptlab.tasks._settings import TaskSpec

#: The metrics of the task, primary first.
METRICS = ("preference_accuracy", "mean_margin")


class PreferenceSettings(Spec):
    """``task:`` settings of preference pairs. Columns left unset are detected (see ``read.COLUMN_SETS``)."""

    type: Literal["preference"] = "preference"
    prompt_column: str | None = Field(
        None, description="Column with the prompt: a text or chat messages (default: detected: prompt, question, "
        "instruction, context, input, query; none at all for chat pairs whose chosen/rejected conversations share "
        "their prompt turns).")
    chosen_column: str | None = Field(None, description="Column with the preferred response: a text, or chat "
                                      "messages ending with the assistant's reply (default: detected: chosen, ...).")
    rejected_column: str | None = Field(None, description="Column with the dispreferred response, as chosen "
                                        "(default: detected: rejected, ...).")
    template: str | None = Field(None, description="Prompt template of the generative rungs, with a `{text}` "
                                 "placeholder for the prompt (default: `{text}`).")
    system_prompt: str | None = Field(None, description="System message when the chat template is used.")
    chat_template: bool | None = Field(
        None, description="Wrap prompts in the tokenizer's chat template (default: when the tokenizer has one).")
    truncate_input: Literal["start", "end"] = Field(
        "start", description="Which end of a prompt is cut when prompt + response exceed data.max_length (default "
        "start: the most recent turns of a dialogue are kept).")
    forgetting_text: str | None = Field(
        "hamlet", description="General text on which each generative rung's perplexity is compared with the base "
        "model's (forgetting): a builtin text (hamlet) or a UTF-8 text file; null turns the check off.")
    forgetting_tokens: int = Field(1024, gt=1, le=65536, description="Tokens of forgetting_text that are scored.")
    judges: JudgesSpec | None = Field(
        None, description="Judges of the generative rungs (see adaptlab.judging): here only mmlu (the rungs score "
        "given pairs and write no outputs for reward or LLM judging); mmlu_accuracy lands next to the forgetting "
        "perplexity.")

    #: The generative rungs' formatter asks for label words; pairs have none.
    label_words: ClassVar[None] = None

    _template = field_validator("template")(TaskSpec._template_placeholders.__func__)  # type: ignore[attr-defined]
