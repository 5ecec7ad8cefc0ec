"""The zero-shot floor of the preference task: the base model prefers whichever response it finds more likely
after the prompt (sum of the response's token log-probabilities; their mean with ``length_normalize``). Trains
nothing; every trained preference rung should beat it.
"""

from __future__ import annotations

from pydantic import Field

from adaptlab.methods._causal import GenerativeMethod, PromptParams
from adaptlab.methods._preference import PreferenceRung
from adaptlab.methods.base import METHODS


class BasePreferenceParams(PromptParams):
    length_normalize: bool = Field(False, description="Compare the mean instead of the sum of the responses' token "
                                   "log-probabilities (the sum favours short responses).")


@METHODS.register("base_preference")
class BasePreference(PreferenceRung, GenerativeMethod):
    """The base model's log-likelihood preference."""

    Params = BasePreferenceParams
