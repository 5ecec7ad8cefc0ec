"""Zero-shot prompting: the base model, prompted with the template (instruction last), nothing trained.

Classification is by constrained choice (each label's word scored by log-likelihood); for the generation task the
model writes the answer. The rung is the baseline every adapted rung on a generative model is measured against.
"""

from __future__ import annotations

from adaptlab.methods._causal import GenerativeMethod
from adaptlab.methods.base import METHODS


@METHODS.register("zero_shot_prompt")
class ZeroShotPrompt(GenerativeMethod):
    """The base model with the prompt template; classification by constrained choice."""
