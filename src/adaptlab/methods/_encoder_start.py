"""Encoder rungs that start from a ``domain_mlm`` rung (``from: domain_mlm``): one implementation for all of them.

``domain_mlm`` continues masked-LM pre-training of the base encoder on the task's own texts and ships the whole
masked-LM model (``weights/mlm/``, with ``weights/encoder.json`` naming the encoder's prefix in it). A rung that starts
from it builds the base model as it always does, then replaces the encoder body's weights with the pre-trained ones
(:func:`load_encoder`); what the masked-LM model lacks stays as the base has it (the pretrained pooler that
``head: pooler`` uses) and the new task head is initialised as without ``from``. The rung ships those start weights
beside its own (``start_encoder.safetensors``), so it loads, exports and serves without the domain_mlm folder.

- :class:`StartsFromEncoder`: the mixin of FineTuneMethod (head_only, top_layers, lora, full), EmbeddingMethod
  (linear_probe) and setfit. A rung opts in by declaring ``starts_from = ENCODER_PARENTS``.
- :func:`encoder_state`, :func:`load_encoder`, :func:`encoder_body`: what another rung calls to do the same by hand
  (e.g. an embedding rung with its own model: ``load_encoder(st_model[0].auto_model, encoder_state(weights))``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from adaptlab.errors import UserError

#: The methods whose finished rungs an encoder rung can start from.
ENCODER_PARENTS = frozenset({"domain_mlm"})
#: In a domain_mlm rung's weights/: the masked-LM model (a transformers folder) and the name of its encoder in it.
MLM_DIR, ENCODER_INFO = "mlm", "encoder.json"
#: In a child rung's weights/: the encoder weights it started from.
START_FILE = "start_encoder.safetensors"


def encoder_state(weights: Path) -> dict[str, torch.Tensor]:
    """The pre-trained encoder body's weights in a domain_mlm rung's ``weights/`` folder, named as in ``AutoModel``
    (``embeddings.word_embeddings.weight``, ...)."""
    weights = Path(weights)
    try:
        prefix = json.loads((weights / ENCODER_INFO).read_text(encoding="utf-8"))["prefix"] + "."
        files = sorted((weights / MLM_DIR).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(weights / MLM_DIR / "model.safetensors")
        state = {k: v for f in files for k, v in load_file(f).items()}
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{weights}: not a domain_mlm rung's weights ({exc}); re-run that rung.") from None
    body = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not body:
        raise UserError(f"{weights}: the masked-LM model has no weights under '{prefix}'; re-run that rung.")
    return body


def encoder_body(model: torch.nn.Module) -> torch.nn.Module:
    """The encoder inside a task model: transformers' models and :class:`PooledClassifier` keep it under their
    ``base_model_prefix`` (``bert`` for BERT)."""
    return getattr(model, model.base_model_prefix)


def load_encoder(body: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` (from :func:`encoder_state`) into the encoder ``body``. Every weight of the body must be there
    but the pooler's (the masked-LM model has none; the body keeps the base's); anything else is a UserError naming
    ``source``: the pre-trained encoder is another architecture than this base model."""
    own = body.state_dict()
    missing = sorted(k for k in own if k not in state and not k.startswith("pooler."))
    unknown = sorted(k for k in state if k not in own)
    wrong = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if missing or unknown or wrong:
        raise UserError(f"{source}: its pre-trained encoder does not fit this base model's (missing {missing[:3]}, "
                        f"unknown {unknown[:3]}, other shapes {wrong[:3]}); was it trained on another model?")
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value.to(dtype=own[name].dtype, device=own[name].device))


class StartsFromEncoder:
    """Starting from a domain_mlm rung: :meth:`start_from` reads its encoder into :attr:`start_state`, which the rung
    applies where it builds its model (:func:`load_encoder`), ships with :meth:`save_start` and reads back with
    :meth:`restore_start` in ``load``."""

    name: str
    starts_from: frozenset[str]
    #: The encoder weights this rung starts from (None: the base model's) and where they came from.
    start_state: dict[str, torch.Tensor] | None = None
    start_source: str | None = None

    def start_from(self, run_dir: Path, info: dict[str, Any]) -> None:
        if not self.starts_from:  # a subclass that hasn't opted in: Method's refusal
            super().start_from(run_dir, info)  # type: ignore[misc]
            return
        run_dir, info = self.accepted_parent(run_dir, info)  # type: ignore[attr-defined]
        self.start_state = encoder_state(Path(run_dir) / "weights")
        self.start_source = str(Path(run_dir).resolve())

    def save_start(self, path: Path) -> None:
        """Ship the start weights with the rung (nothing when it started from the base model)."""
        if self.start_state is not None:
            path.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.start_state.items()}, path / START_FILE)

    def restore_start(self, path: Path) -> None:
        """Read the start weights a saved rung ships (none: it started from the base model)."""
        file = Path(path) / START_FILE
        if file.is_file():
            self.start_state, self.start_source = load_file(file), str(file.resolve())
