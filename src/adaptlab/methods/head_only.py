"""Head only: the pretrained body is frozen; only the new classification head (and pooler) trains."""

from __future__ import annotations

import torch
from pydantic import Field

from adaptlab.methods._finetune import EncoderParams, FineTuneMethod, freeze_all_but, head_parameter_names
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Range


class HeadParams(EncoderParams):
    learning_rate: float = Field(1e-2, gt=0, lt=1, description="Peak learning rate (a lone linear layer on pooled "
                                 "states wants a high one).")


@METHODS.register("head_only")
class HeadOnly(FineTuneMethod):
    Params = HeadParams
    search_space = {"learning_rate": Range(low=1e-3, high=5e-2, log=True)}

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        return freeze_all_but(model, set(head_parameter_names(model)))
