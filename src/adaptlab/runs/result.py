"""One rung's result, typed: what the pipeline writes to ``metrics.json`` and the leaderboard, and what readers
(``--resume``, reports) parse back.

    result = RungResult.model_validate(json.loads((run_dir / "metrics.json").read_text()))
    result.entry()          # the rung's leaderboard.json entry
    result.model_dump()     # metrics.json, exactly as the pipeline writes it

The file layout is kept as it has always been: the leaderboard keys first, then the task, the task's own results
(``per_class``, ``confusion_matrix``, ``n``, ``forgetting``, ...) **at the top level**, then intervals, history and
provenance. Those task-specific keys live in :attr:`RungResult.details` here: validation gathers every key that is
not a field into it and dumping puts them back at the top level, so a file read and dumped again is unchanged.
Every field but ``status`` has a default, so run folders written before a field existed still read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

#: The keys of a rung's leaderboard entry, in the order they are written.
ENTRY_KEYS = ("rung", "method", "dir", "primary_metric", "status", "value", "interval", "metrics", "cost", "error",
              "diagnosis")
#: Keys of metrics.json and the entry present only when the ladder asked for them (``tuning:``, ``seeds:``,
#: ``train_sizes:``).
OPTIONAL_KEYS = ("tuning", "seeds", "train_sizes")


class RungResult(BaseModel):
    """A finished (or failed) rung: its leaderboard entry plus the fuller record of metrics.json."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # -- the leaderboard entry ----------------------------------------------------------------------------------
    rung: str | None = Field(None, description="The rung's run name.")
    method: str | None = Field(None, description="The registered method it ran.")
    dir: str | None = Field(None, description="Its folder, relative to the ladder's output folder.")
    primary_metric: str | None = Field(None, description="The metric the ladder ranks by.")
    status: str = Field(..., description="'ok', or 'failed' with an error.")
    value: float | None = Field(None, description="The primary metric on the test split (None when failed).")
    interval: list[float] | None = Field(None, description="95% interval of the primary metric.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Every metric of the task, plus the "
                                    "method's own (e.g. forgetting).")
    cost: dict[str, Any] = Field(default_factory=dict, description="Parameters, time, memory, size, latency.")
    error: str | None = Field(None, description="Why a failed rung failed, in words.")
    diagnosis: dict[str, Any] | None = Field(None, description="The task's verdict on whether the rung learned.")
    # -- the rest of metrics.json -------------------------------------------------------------------------------
    task: str | None = Field(None, description="The task type.")
    higher_is_better: bool | None = Field(None, description="Direction of the primary metric.")
    intervals: dict[str, Any] = Field(default_factory=dict, description="95% interval of every metric.")
    history: list[dict[str, Any]] = Field(default_factory=list, description="Training log (loss, eval loss, and "
                                          "eval_<metric>: the task's metric on validation at each evaluation).")
    resumed_from: str | None = Field(None, description="The checkpoint training resumed from (--resume).")
    training: dict[str, Any] = Field(default_factory=dict, description="Resolved training settings (schedule, "
                                     "class weights) and which weights were kept (selection).")
    provenance: dict[str, Any] = Field(default_factory=dict, description="Data/model hashes, packages, seed, "
                                       "machine; from_rung and from_rung_sha256 for a rung with `from`.")
    tuning: dict[str, Any] | None = Field(None, description="The rung's search (`tuning:`): budget, space, every "
                                          "trial, the chosen and the default settings with their scores.")
    seeds: dict[str, Any] | None = Field(None, description="The rung over training seeds (`seeds:`): value per "
                                         "seed, mean, std, min, max, and each seed's run folder.")
    train_sizes: dict[str, Any] | None = Field(
        None, description="The rung's data-efficiency curve (`train_sizes:`): unit (per_class or examples), "
        "whether it trains, and per size its value per seed, mean, std, min, max, the outermost 95% bounds and each "
        "run's folder; a rung that doesn't train has a flat `reference` instead.")
    details: dict[str, Any] = Field(default_factory=dict, description="What the task's evaluate returned beyond "
                                    "metrics and intervals (per_class, confusion_matrix, n, per_type, ...); "
                                    "top-level keys in metrics.json.")

    @model_validator(mode="before")
    @classmethod
    def _gather_details(cls, data: Any) -> Any:
        """metrics.json keeps the task's own keys at the top level: collect them into ``details``."""
        if not isinstance(data, dict):
            return data
        extra = {k: v for k, v in data.items() if k not in cls.model_fields}
        if not extra:
            return data
        given = data.get("details") or {}
        if not isinstance(given, dict):
            return data  # reported by the field's own validation
        clash = sorted(set(extra) & set(given))
        if clash:
            raise ValueError(f"keys {clash} are given both at the top level and in details")
        return {**{k: v for k, v in data.items() if k in cls.model_fields}, "details": {**given, **extra}}

    @model_validator(mode="after")
    def _details_are_not_fields(self) -> RungResult:
        """A details key named like a field would be written over that field in metrics.json."""
        clash = sorted(set(self.details) & set(type(self).model_fields))
        if clash:
            raise ValueError(f"details may not use the field names {clash}")
        return self

    @model_serializer(mode="wrap")
    def _flatten(self, handler: Any) -> dict[str, Any]:
        """metrics.json's layout: the entry, task, higher_is_better, the task's own keys, then the rest."""
        data = handler(self)
        details = data.pop("details", None) or {}
        head = {k: data.pop(k) for k in (*ENTRY_KEYS, "task", "higher_is_better") if k in data}
        for optional in OPTIONAL_KEYS:  # written only when the ladder asked for them
            if data.get(optional) is None:
                data.pop(optional, None)
        return {**head, **details, **data}

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def entry(self) -> dict[str, Any]:
        """The rung's leaderboard.json entry."""
        data = self.model_dump()
        return {k: data[k] for k in (*ENTRY_KEYS, *OPTIONAL_KEYS) if k in data}
