"""Server settings: limits that protect the server, each with its default and what it bounds."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    api_key: str | None = Field(None, description="Key for the admin endpoints (Bearer token or X-API-Key); none: "
                                                  "admin endpoints are disabled.")
    max_batch_size: int = Field(32, gt=0, description="Most inputs in one engine call (one adapter per call).")
    max_wait_ms: float = Field(5.0, ge=0, description="How long the worker waits for more same-adapter requests.")
    max_queue: int = Field(256, gt=0, description="Requests waiting at most; beyond, 429 Too Many Requests.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request limit (queueing and running); beyond, 504.")
    max_tokens: int = Field(512, gt=0, description="Largest max_tokens a completion may ask for; above it, 400.")
    default_max_tokens: int = Field(64, gt=0, description="max_tokens when a request gives none.")
    max_inputs: int = Field(64, gt=0, description="Most texts or prompts in one request.")
    max_input_chars: int = Field(20_000, gt=0, description="Longest text, prompt or message, in characters.")
    max_body_bytes: int = Field(1_000_000, gt=0, description="Largest request body; above it, 413.")
    adapter_roots: list[Path] = Field(default_factory=list,
                                      description="Folders the admin endpoint may load adapters from.")
