"""Prompt tuning: a few learned "virtual token" embeddings in front of every input; the model is frozen (peft).

Trained like the other fine-tuning rungs (loss on the answer only). The soft prompt starts from random vectors or
from the embeddings of ``init_text``. After training, the vocabulary tokens nearest to each virtual token (cosine
similarity of input embeddings) are written to ``soft_prompt.json`` in the run folder and summarised in
``metrics.soft_prompt_nearest``, a glimpse of what the prompt "says".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.methods._peft import PEFT_WEIGHTS, peft_task_type
from adaptlab.methods._sft import ADAPTER, SFTMethod, SFTParams
from adaptlab.methods.base import METHODS, Method
from adaptlab.runtime import CAUSAL_SFT_OPTIONS
from adaptlab.search_space import Choice, Range

SOFT_PROMPT_FILE = "soft_prompt.json"


class PromptTuningParams(SFTParams):
    num_virtual_tokens: int = Field(16, gt=0, le=512, description="Learned tokens in front of every input.")
    init_text: str | None = Field(None, description="Start the soft prompt from this text's token embeddings "
                                  "(repeated or cut to num_virtual_tokens); default random.")
    nearest: int = Field(5, gt=0, le=50, description="Vocabulary tokens reported per virtual token.")
    learning_rate: float = Field(3e-2, gt=0, lt=1, description="Peak learning rate.")


def input_embeddings(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's input embedding layer, or None when it has none that prompt tuning can extend."""
    try:
        emb = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        return None
    return emb if isinstance(emb, torch.nn.Embedding) else None


def _no_embeddings(ctx: RunContext, model: torch.nn.Module) -> str:
    return (f"prompt tuning learns vectors in the model's input-embedding space, but '{ctx.model_spec}' "
            f"({type(model).__name__}) exposes no input embeddings (get_input_embeddings). Use lm_lora or lm_ia3.")


@METHODS.register("prompt_tuning")
class PromptTuning(SFTMethod):
    """A trained soft prompt in front of every input; the model is frozen."""

    Params = PromptTuningParams
    #: no padding-free batches: peft puts the soft prompt in front of a whole row and drops position ids, so packed
    #: examples would see each other and only the first its prompt
    runtime_options = CAUSAL_SFT_OPTIONS - {"packing"}
    search_space = {"learning_rate": Range(low=3e-3, high=1e-1, log=True),
                    "num_virtual_tokens": Choice(values=(8, 16, 32))}

    @classmethod
    def check_model(cls, params: Any, ctx: RunContext, config: Any, kind: str) -> list[str]:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
        with torch.device("meta"):  # the architecture only; no weights are read
            model = auto.from_config(config, trust_remote_code=ctx.trust_remote_code)
        return [] if input_embeddings(model) is not None else [_no_embeddings(ctx, model)]

    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        if input_embeddings(model) is None:
            raise UserError(_no_embeddings(self.ctx, model))
        p = self.params
        config = PromptTuningConfig(
            task_type=peft_task_type(self.kind), num_virtual_tokens=p.num_virtual_tokens,
            num_transformer_submodules=1,  # seq2seq too: the soft prompt goes in front of the encoder input
            prompt_tuning_init=PromptTuningInit.TEXT if p.init_text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=p.init_text,
            tokenizer_name_or_path=self.ctx.model.location if p.init_text else None,
        )
        model = get_peft_model(model, config)
        model.prompt_encoder.float()  # a bf16 soft prompt would round away small updates
        self.on_loaded(model)
        return model

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        """Rebuild the soft prompt in float32 first, then load its weights (loading into a bf16 copy would round)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        method = cls(params, ctx)
        method.setup_formatting()
        method.model = method.adapt(method.base_model()).to(ctx.torch_device)
        set_peft_model_state_dict(method.model, load_file(path / ADAPTER / PEFT_WEIGHTS))
        method.model.eval()
        return method

    def on_loaded(self, model: torch.nn.Module | None = None) -> None:
        # A causal model sees the virtual tokens as extra positions in front; a seq2seq decoder does not.
        self.virtual_tokens = self.params.num_virtual_tokens if self.kind == "causal" else 0

    # -- what the soft prompt is close to -------------------------------------------------------------------------
    def nearest_tokens(self) -> list[list[dict[str, Any]]]:
        """For each virtual token, the ``nearest`` vocabulary tokens by cosine similarity of input embeddings."""
        with torch.no_grad():
            soft = self.model.get_prompt_embedding_to_save(self.model.active_adapter).float()
            soft = soft[: self.params.num_virtual_tokens]
            vocab = input_embeddings(self.model.get_base_model()).weight.float()
            sims = torch.nn.functional.normalize(soft, dim=-1) @ torch.nn.functional.normalize(vocab, dim=-1).T
            values, ids = sims.topk(min(self.params.nearest, vocab.shape[0]), dim=-1)
        return [[{"token": self.tokenizer.decode([int(t)]), "id": int(t), "cosine": round(float(v), 4)}
                 for v, t in zip(row_v, row_t)] for row_v, row_t in zip(values, ids)]

    def after_fit(self, workdir: Path) -> None:
        report = {"num_virtual_tokens": self.params.num_virtual_tokens, "init_text": self.params.init_text,
                  "nearest": self.nearest_tokens()}
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / SOFT_PROMPT_FILE).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")

    def extra_metrics(self) -> dict[str, Any]:
        out = super().extra_metrics()
        out["soft_prompt_nearest"] = [" | ".join(repr(t["token"]) for t in row[:3]) for row in self.nearest_tokens()]
        return out
