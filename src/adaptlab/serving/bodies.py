"""The JSON bodies the HTTP endpoints take (pydantic). Extra fields that OpenAI clients send are ignored, and every
string must be valid Unicode."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*")
    @classmethod
    def _unicode_text(cls, value: Any) -> Any:
        """Every string must be valid Unicode: JSON's ``\\ud800`` escapes can carry lone UTF-16 surrogates, which no
        tokenizer (and no UTF-8 encoder) takes. Refused here (422 naming the field and item), never in a batch."""
        problem = _bad_text(value)
        if problem:
            raise ValueError(problem)
        return value


def _bad_text(value: Any, where: str = "") -> str | None:
    """What is wrong with the first string in ``value`` (a str, list or dict) that can't be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return (f"{where or 'the text'} is not valid Unicode: a lone surrogate U+{ord(value[e.start]):04X} at "
                    f"character {e.start} (send text that encodes as UTF-8).")
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = _bad_text(item, f"{where} item {i}".strip())
            if problem:
                return problem
    elif isinstance(value, dict):
        for i, (key, item) in enumerate(value.items()):
            problem = _bad_text(key, f"{where} key {i}".strip()) or _bad_text(item, f"{where} value {i}".strip())
            if problem:
                return problem
    return None


class ClassifyRequest(_Body):
    model: str = Field(..., description="Adapter name, or 'base'.")
    input: str | list[str] = Field(..., description="A text or a list of texts.")
    text_pair: str | list[str] | None = Field(None, description="Second text(s), for text-pair tasks.")
    labels: list[str] | dict[str, str] | None = Field(
        None, description="Zero-shot labels for 'base': names, or {name: description}.")


class NerRequest(_Body):
    model: str = Field(..., description="A token-classification adapter's name, or 'base' for a merged tagger base.")
    input: str | list[str] = Field(..., description="A text or a list of texts.")


class EmbeddingsRequest(_Body):
    """OpenAI's embeddings body. Token-id inputs are not taken (send text); ``dimensions`` may only be the model's
    own."""

    model: str = Field(..., description="An embedding adapter's name, or 'base' (any encoder base).")
    input: str | list[str] = Field(..., description="A text or a list of texts.")
    encoding_format: Literal["float", "base64"] = Field("float", description="Floats, or base64 of little-endian "
                                                       "float32 bytes (as OpenAI's clients ask by default).")
    dimensions: int | None = Field(None, ge=1, description="Must equal the model's embedding size when given.")


class _Sampling(_Body):
    """Fields shared by the OpenAI completion and chat request bodies. ``top_k`` and ``repetition_penalty`` (as vLLM
    takes them) are the ladder's decoding settings of the same names (task.generation)."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2, description="0 (or under 1e-5): greedy, as vLLM decodes it.")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="Sample among the k most likely tokens (0 or null: all).")
    repetition_penalty: float = Field(1.0, ge=0.01, le=10, description="Penalise tokens already in the text (>1).")
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1, description="Any 64-bit seed (signed or not).")


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatRequest(_Sampling):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class LoadAdapterRequest(_Body):
    name: str
    path: str
