"""Where adaptlab keeps its files: ``$ADAPTLAB_HOME`` (default ``~/.cache/adaptlab``)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "~/.cache/adaptlab"


def adaptlab_home() -> Path:
    """The adaptlab home folder, read from ``$ADAPTLAB_HOME`` on every call (tests change it)."""
    return Path(os.environ.get("ADAPTLAB_HOME") or DEFAULT_HOME).expanduser()


def models_cache_dir() -> Path:
    """Built and converted models (tiny random models, SmolLM2 as safetensors) and the weight-hash cache."""
    return adaptlab_home() / "models"
