"""Top layers: freeze the body except its last N transformer layers; those and the head train."""

from __future__ import annotations

import torch
from pydantic import Field

from adaptlab.errors import UserError
from adaptlab.methods._finetune import (
    EncoderParams,
    FineTuneMethod,
    freeze_all_but,
    head_parameter_names,
    transformer_layers,
)
from adaptlab.methods.base import METHODS
from adaptlab.search_space import Choice, Range


class TopLayersParams(EncoderParams):
    layers: int = Field(2, gt=0, description="How many of the last transformer layers train.")
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="Peak learning rate.")


@METHODS.register("top_layers")
class TopLayers(FineTuneMethod):
    Params = TopLayersParams
    search_space = {"learning_rate": Range(low=3e-5, high=1e-3, log=True), "layers": Choice(values=(1, 2, 4))}

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        stack_name, stack = transformer_layers(model)
        n = self.params.layers
        if n > len(stack):
            raise UserError(f"top_layers.params.layers={n}, but the model has only {len(stack)} layers.")
        prefixes = tuple(f"{stack_name}.{i}." for i in range(len(stack) - n, len(stack)))
        trainable = {name for name, _ in model.named_parameters() if name.startswith(prefixes)}
        return freeze_all_but(model, trainable | set(head_parameter_names(model)))
