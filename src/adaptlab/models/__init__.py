"""Model specs to local folders: packaged offline models, tiny random models, local folders and hub ids.

>>> resolved = resolve_model("tiny-random-bert")          # doctest: +SKIP
>>> AutoModel.from_pretrained(resolved.location, **load_kwargs(resolved))  # doctest: +SKIP
"""

from adaptlab.models.hashing import build_once, model_sha256
from adaptlab.models.packaged import PACKAGED_MODELS, convert_gguf
from adaptlab.models.resolve import (
    KNOWN_MODELS,
    ResolvedModel,
    check_hub_available,
    hub_offline,
    load_kwargs,
    resolve_model,
)
from adaptlab.models.tiny import TINY_ARCHS, build_tiny

__all__ = [
    "KNOWN_MODELS",
    "PACKAGED_MODELS",
    "TINY_ARCHS",
    "ResolvedModel",
    "build_once",
    "build_tiny",
    "check_hub_available",
    "convert_gguf",
    "hub_offline",
    "load_kwargs",
    "model_sha256",
    "resolve_model",
]
