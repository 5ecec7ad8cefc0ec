"""Search spaces for tuning: what a method declares (:attr:`adaptlab.methods.Method.search_space`) and what a
ladder's ``tuning.space`` overrides, per hyperparameter.

In YAML a dimension is a list of choices or a range::

    tuning:
      space:
        lora: {learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}, r: [4, 8, 16]}

A range is integer when ``integer: true`` (or when both bounds are integers in YAML and ``log`` is not asked for on
floats). Kept free of heavy imports: methods import it to declare their defaults.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Range(BaseModel):
    """A numeric interval, sampled uniformly (or on a log scale)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    low: float
    high: float
    log: bool = Field(False, description="Sample on a log scale (for learning rates); needs low > 0.")
    integer: bool = Field(False, description="Whole numbers only (layers, ranks, epochs).")

    @model_validator(mode="after")
    def _check(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low})")
        if self.integer and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("integer: true needs whole-number bounds")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        scale = ", log" if self.log else ""
        kind = "int " if self.integer else ""
        return f"{kind}[{self.low:g}, {self.high:g}{scale}]"


class Choice(BaseModel):
    """A fixed set of values, tried as categories."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    values: tuple[Any, ...] = Field(..., min_length=1)

    def contains(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "{" + ", ".join(map(str, self.values)) + "}"


Dim = Range | Choice


def parse_dim(raw: Any) -> Dim:
    """A dimension from YAML: a list (choices) or a mapping (a range, or ``{values: [...]}``)."""
    if isinstance(raw, (Range, Choice)):
        return raw
    if isinstance(raw, (list, tuple)):
        return Choice(values=tuple(raw))
    if isinstance(raw, dict):
        if "values" in raw:
            return Choice.model_validate({**raw, "values": tuple(raw["values"])})
        both_int = all(isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool) for k in ("low", "high"))
        return Range.model_validate({"integer": both_int, **raw})
    raise ValueError(f"a search dimension is a list of choices or {{low, high[, log]}}, not {raw!r}")


def suggest(trial: Any, name: str, dim: Dim) -> Any:
    """The value an Optuna trial draws for ``name`` in ``dim``."""
    if isinstance(dim, Choice):
        return trial.suggest_categorical(name, list(dim.values))
    if dim.integer:
        return trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(name, dim.low, dim.high, log=dim.log)


def distribution(dim: Dim) -> Any:
    """The Optuna distribution of ``dim`` (to replay recorded trials into a study)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dim, Choice):
        return CategoricalDistribution(list(dim.values))
    if dim.integer:
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return FloatDistribution(dim.low, dim.high, log=dim.log)
