"""The base of every typed config section, shared by the ladder spec and the tasks' own settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

#: Seeds numpy, scikit-learn and torch all accept.
MAX_SEED = 2**32 - 1
def check_seed(v: int | None) -> int | None:
    """A seed numpy and scikit-learn accept (0 to 2**32 - 1), else a message saying so."""
    if v is not None and not 0 <= v <= MAX_SEED:
        raise ValueError(f"a seed must be a whole number from 0 to {MAX_SEED} (2**32 - 1), the range numpy and "
                         "scikit-learn accept; pick e.g. 0 or 42")
    return v


class Spec(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
