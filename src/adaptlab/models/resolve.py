"""Turn a model spec from a config or the command line into a local folder that from_pretrained can load.

A spec is tried, in order, as

1. a local folder (saved with ``save_pretrained``; safetensors required unless ``allow_pickle``) or GGUF file;
2. a packaged offline model: ``minilm``, ``smollm2`` (see :mod:`adaptlab.models.packaged`);
3. a tiny random model: ``tiny-random-{bert,gpt2,llama,t5}`` (see :mod:`adaptlab.models.tiny`);
4. a Hugging Face hub id, checked with a short timeout; offline, only models already in the HF cache pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adaptlab.errors import UserError, did_you_mean
from adaptlab.models.hashing import GGUF_SUFFIX, SAFETENSORS_SUFFIX, model_sha256, pickle_files
from adaptlab.models.packaged import PACKAGED_MODELS, minilm_dir, smollm2_dir
from adaptlab.models.tiny import tiny_arch, tiny_model_dir, tiny_names
from adaptlab.paths import models_cache_dir

Source = Literal["local", "packaged", "tiny", "hub"]
KNOWN_MODELS: tuple[str, ...] = (*PACKAGED_MODELS, *tiny_names())
HUB_TIMEOUT_S = 5.0
_TRUE = {"1", "true", "yes", "on"}
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model spec points.

    ``path`` is an absolute local folder for every source except ``"hub"``, where it is ``Path(hub_id)`` and
    means nothing on disk: pass :attr:`location` to from_pretrained, which is right for every source.
    ``sha256`` is :func:`model_sha256` of the folder (None for the hub, whose commit is in ``revision``).
    """

    spec: str
    path: Path
    source: Source
    sha256: str | None
    gguf_file: str | None = None
    allow_pickle: bool = False
    revision: str | None = None

    @property
    def location(self) -> str:
        """What to pass as the first argument of from_pretrained: the folder, or the hub id."""
        return self.spec if self.source == "hub" else str(self.path)

    @property
    def is_local(self) -> bool:
        return self.source != "hub"


def resolve_model(spec: str, *, allow_pickle: bool = False, cache_dir: Path | None = None) -> ResolvedModel:
    """Resolve ``spec`` (folder, packaged short name, tiny-random-<arch> or hub id); UserError if it can't be.

    ``cache_dir`` (default ``$ADAPTLAB_HOME/models``) receives built tiny models, converted SmolLM2 and the
    weight-hash cache.
    """
    spec = str(spec).strip()
    if not spec:
        raise UserError(f"model: empty model name. Give a local folder or one of: {', '.join(KNOWN_MODELS)}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else models_cache_dir()
    local = Path(spec).expanduser()
    if local.exists():
        return _resolve_local(spec, local.resolve(), allow_pickle=allow_pickle, cache_dir=cache)
    if spec in PACKAGED_MODELS:
        folder = minilm_dir() if spec == "minilm" else smollm2_dir(cache)
        sha = model_sha256(folder, cache_dir=cache)
        return ResolvedModel(spec, folder, "packaged", sha, allow_pickle=allow_pickle)
    arch = tiny_arch(spec)
    if arch is not None:
        folder = tiny_model_dir(arch, cache)
        sha = model_sha256(folder, cache_dir=cache)
        return ResolvedModel(spec, folder, "tiny", sha, allow_pickle=allow_pickle)
    if _looks_like_path(spec):
        raise UserError(
            f"model '{spec}': no such file or folder ({local.absolute()}).{did_you_mean(spec, KNOWN_MODELS)} "
            f"Give an existing model folder or one of: {', '.join(KNOWN_MODELS)}"
        )
    revision = check_hub_available(spec)
    return ResolvedModel(spec, Path(spec), "hub", None, allow_pickle=allow_pickle, revision=revision)


def load_kwargs(resolved: ResolvedModel, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` that keep loading safe and offline for local models.

    safetensors only unless the model was resolved with ``allow_pickle``; no remote code unless asked;
    ``local_files_only`` for everything but the hub; ``gguf_file`` when the model is a GGUF.
    """
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if not resolved.allow_pickle:
        kwargs["use_safetensors"] = True
    if resolved.is_local:
        kwargs["local_files_only"] = True
    elif resolved.revision:
        kwargs["revision"] = resolved.revision
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
        kwargs.pop("use_safetensors", None)  # a GGUF is not a pickle; use_safetensors would make it look for one
    return kwargs


# -- local folders ---------------------------------------------------------------------------------------------


def _resolve_local(spec: str, path: Path, *, allow_pickle: bool, cache_dir: Path) -> ResolvedModel:
    if path.is_file():
        if path.suffix == GGUF_SUFFIX:
            return _local(spec, path.parent, allow_pickle, cache_dir, gguf_file=path.name)
        raise UserError(
            f"model '{spec}': {path} is a file. Give the folder that holds config.json and the weights "
            "(as written by save_pretrained), or a .gguf file."
        )
    if not path.is_dir():
        raise UserError(f"model '{spec}': {path} is neither a folder nor a file.")
    names = {p.name for p in path.iterdir() if p.is_file()}
    ggufs = sorted(n for n in names if n.endswith(GGUF_SUFFIX))
    has_safetensors = any(n.endswith(SAFETENSORS_SUFFIX) for n in names)
    if not has_safetensors and len(ggufs) == 1:
        return _local(spec, path, allow_pickle, cache_dir, gguf_file=ggufs[0])
    if not has_safetensors and len(ggufs) > 1:
        raise UserError(
            f"model '{spec}': {path} holds several GGUF files ({', '.join(ggufs)}). Give the path of the one to use."
        )
    if "config.json" not in names:
        raise UserError(
            f"model '{spec}': {path} has no config.json, so it is not a model folder. Give a folder written by "
            "save_pretrained (config.json, *.safetensors, tokenizer files)."
        )
    if not has_safetensors:
        pickles = [p.name for p in pickle_files(path)]
        if not pickles:
            raise UserError(
                f"model '{spec}': {path} has a config.json but no weights (*.safetensors). "
                "Save the model with save_pretrained into this folder."
            )
        if not allow_pickle:
            raise UserError(
                f"model '{spec}': {path} holds only pickle checkpoints ({', '.join(pickles)}) and no *.safetensors. "
                "Pickle checkpoints are refused unless allow_pickle is set, because unpickling runs arbitrary code. "
                "Convert the model to safetensors (load it once and save_pretrained it), or set allow_pickle: true "
                "if you trust where it came from."
            )
    return _local(spec, path, allow_pickle, cache_dir)


def _local(
    spec: str, folder: Path, allow_pickle: bool, cache_dir: Path, gguf_file: str | None = None
) -> ResolvedModel:
    sha = model_sha256(folder, cache_dir=cache_dir)
    return ResolvedModel(spec, folder, "local", sha, gguf_file=gguf_file, allow_pickle=allow_pickle)


def _looks_like_path(spec: str) -> bool:
    """True for specs that can only be file paths: start with . / ~, use backslashes, or have several slashes."""
    return spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1 or spec.endswith(GGUF_SUFFIX)


# -- the hub ---------------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set (read now, not at import)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in _OFFLINE_VARS)


def _not_available(spec: str, why: str) -> UserError:
    return UserError(
        f"model '{spec}' is not a local folder, a packaged model ({', '.join(PACKAGED_MODELS)}) or "
        f"tiny-random-{{bert,gpt2,llama,t5}}, and {why}.{did_you_mean(spec, KNOWN_MODELS)} "
        "Give a folder saved with save_pretrained, or one of the names above."
    )


def _in_hf_cache(spec: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(spec, "config.json"), str)
    except Exception:  # an invalid id or unreadable cache: not cached
        return False


def check_hub_available(spec: str, *, timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Check that ``spec`` is a model on the Hugging Face hub; return its commit sha (None if only cached).

    Offline (HF_HUB_OFFLINE=1) it passes only if the model is already in the local HF cache. Online it asks the
    hub with a ``timeout``-second limit, so a dead network fails fast. Any failure is a UserError.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise _not_available(spec, "it is not a valid Hugging Face hub id either") from None
    if hub_offline():
        if _in_hf_cache(spec):
            return None
        why = "the Hugging Face hub is offline (HF_HUB_OFFLINE=1) with no copy of it in the local HF cache"
        raise _not_available(spec, why)
    return _ask_hub(spec, timeout)


def _ask_hub(spec: str, timeout: float) -> str | None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        return HfApi().model_info(spec, timeout=timeout).sha
    except GatedRepoError:
        raise UserError(
            f"model '{spec}' is gated on the Hugging Face hub: accept its licence on the model page and log in "
            "with `hf auth login`."
        ) from None
    except RepositoryNotFoundError:
        raise _not_available(spec, "the Hugging Face hub has no model of that name") from None
    except Exception as exc:  # network down, DNS, timeout, proxy: all mean "unreachable"
        if _in_hf_cache(spec):
            return None
        raise _not_available(spec, f"the Hugging Face hub is unreachable ({type(exc).__name__}: {exc})") from None
