"""The base of every typed config section, shared by the ladder spec and the tasks' own settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

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

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


def next_to_config(model: str, base_dir: Path | None) -> str:
    """``./folder`` or ``../folder`` is the folder next to the config file (in ``base_dir``) when one is there, as
    data paths are; anything else (a packaged name, a hub id, an absolute path, a folder that is not there) is left
    as written."""
    if base_dir is not None and model.startswith(("./", "../")) and (Path(base_dir) / model).is_dir():
        return str(Path(base_dir) / model)
    return model


def _model_from_context(value: Any, info: ValidationInfo) -> Any:
    """As :func:`next_to_config`, made absolute: what a run records and hashes is then the same from any folder."""
    base_dir = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
    found = next_to_config(value, base_dir) if isinstance(value, str) else value
    return str(Path(found).resolve()) if found != value else value


#: A model named in a config section: found next to the config file as the ladder's ``model`` is (as an absolute
#: path), when the section is validated with ``context={"base_dir": <the config's folder>}``; without one (a run's
#: recorded params), left as written.
ModelName = Annotated[str, AfterValidator(_model_from_context)]


def _label_text(value: Any) -> Any:
    """A label named in a config, read as the same label in the data is (``1``, ``1.0`` and ``"1"`` are "1"; ``True``,
    ``"True"`` and ``true`` are "true"); anything that is not a single value is left for the type check to report."""
    from adaptlab.data.columns import normalise_label

    if isinstance(value, (bool, int, float, str)):
        return normalise_label(value) or value
    return value


#: A class label named in a config (task.labels, label_words' keys, positive_labels, a reward's target_label).
Label = Annotated[str, BeforeValidator(_label_text)]
