"""TSDAE: unsupervised. A decoder (the base's own weights, tied) must rebuild each text from the embedding of a
damaged copy; the damage is our own seeded deletion of whitespace tokens (sentence-transformers' default needs
NLTK data that isn't installed). Learns from every distinct text of the training split, whatever its format."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.methods._sentence import SentenceMethod, SentenceParams, delete_words
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Range


class TSDAEParams(SentenceParams):
    batch_size: int = Field(8, gt=0, description="Texts per optimizer step (the TSDAE paper uses 8).")
    deletion_ratio: float = Field(0.6, ge=0, lt=1, description="Share of whitespace tokens deleted from each "
                                  "text the encoder sees (the TSDAE paper's best: 0.6).")


@METHODS.register("embedding_tsdae")
class EmbeddingTSDAE(SentenceMethod):
    Params = TSDAEParams
    formats = ("retrieval", "triplets", "scored_pairs", "labelled_pairs")
    default_learning_rate = 3e-5
    search_space = {"learning_rate": Range(low=1e-5, high=2e-4, log=True),
                    "deletion_ratio": Range(low=0.3, high=0.8)}

    @classmethod
    def check(cls, params: Any, ctx: RunContext, data: Any) -> list[str]:
        """The base must be able to act as a decoder (BERT-style encoders can: their LM head class exists)."""
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        problems = super().check(params, ctx, data)
        try:
            config = AutoConfig.from_pretrained(ctx.model.location, trust_remote_code=ctx.trust_remote_code)
        except (OSError, ValueError):  # checked again, with the real error, when the rung loads it
            return problems
        if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            problems.append(f"{cls.name} needs a base that can also serve as its decoder (a causal LM head for "
                            f"'{config.model_type}' in transformers), and {ctx.model_spec} has none; use another "
                            "rung or a BERT-style base.")
        return problems

    def prepare(self) -> None:
        """The loss loads the decoder and ties the encoder's weights to it: before LoRA wraps the encoder, so
        the adapters stay the encoder's alone and the tied (base) weights stay frozen."""
        from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss

        self.tsdae = DenoisingAutoEncoderLoss(self.model, tie_encoder_decoder=True)

    def columns(self, split: Any, data: Any) -> dict[str, list]:
        texts = [t for t in split.texts if t.strip()]
        offset = 0 if split is data.train else 1  # validation gets other damage than training
        return {"damaged": delete_words(texts, self.params.deletion_ratio, self.ctx.seed + offset), "text": texts}

    def loss(self, data: Any) -> torch.nn.Module:
        return self.tsdae
