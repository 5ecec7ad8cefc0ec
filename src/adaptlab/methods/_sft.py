"""Supervised fine-tuning of a generative model: the shared ``fit`` of lm_lora, lm_ia3, lm_full and prompt_tuning.

Each training example is the prompt followed by its answer (for classification: the label's word; for generation:
the reference; for preference pairs: the chosen response, the usual stage before DPO), encoded by
:class:`~adaptlab.generation.formatting.Formatter` exactly as it is scored later. The loss is on the answer tokens
only: prompt positions carry the label -100 (trl's collator pads them; for seq2seq the answer is the decoder target).
Training itself is adaptlab's :func:`adaptlab.training.train` (HF Trainer with atomic checkpoints and resume).
Subclasses choose what trains in :meth:`adapt`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.methods._causal import Dtype, GenerativeMethod, split_examples
from adaptlab.methods._peft import load_adapter, save_adapter
from adaptlab.methods.base import Method
from adaptlab.runtime import CAUSAL_SFT_OPTIONS, RUNTIME
from adaptlab.training import TrainParams, train

ADAPTER = "adapter"


class SFTParams(TrainParams):
    """Training settings of the fine-tuning rungs on generative models."""

    epochs: float | None = Field(1.0, gt=0, description="Passes over the training split (null: enough passes "
                                 "for min_steps optimizer steps).")
    group_by_length: bool | None = Field(True, description="Batch texts of similar length together (less padding).")

    dtype: Dtype = Field("auto", description="Weights dtype of the base: auto (as stored: bf16 for smollm2), "
                         "float32, bfloat16. Adapters train in float32.")
    batch_size: int = Field(8, gt=0, description="Examples per optimizer step (per device).")
    eval_batch_size: int = Field(16, gt=0, description="Sequences per forward pass when scoring or validating.")
    length_normalize: bool = Field(False, description="Constrained choice: mean instead of sum of the answer's "
                                   "token log-probabilities.")


@contextlib.contextmanager
def _without_cache(model: torch.nn.Module) -> Iterator[None]:
    """No key/value cache while training: a forward pass that builds one sees no packed sequences (transformers
    keeps padding-free examples apart only without a cache), and training never reuses it."""
    config = model.config
    declared = "use_cache" in config.to_dict()  # a transformers config; not every model declares it
    before = config.use_cache if declared else None
    config.use_cache = False
    try:
        yield
    finally:
        if declared:
            config.use_cache = before
        else:
            del config.use_cache


class SFTMethod(GenerativeMethod):
    """A generative rung whose weights (or adapters, or soft prompt) train on prompt -> answer pairs."""

    Params: ClassVar[type] = SFTParams
    #: on preference pairs they learn the chosen responses (prompt -> chosen), the SFT stage before DPO
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "generation", "preference"})
    trains: ClassVar[bool] = True
    data_parallel: ClassVar[bool] = True
    runtime_options: ClassVar[frozenset[str]] = CAUSAL_SFT_OPTIONS

    # -- data ----------------------------------------------------------------------------------------------------
    def encode_split(self, split: Any) -> Any:
        from datasets import Dataset

        rows = [self.formatter.encode(x, pair, answer) for x, pair, answer in split_examples(split, self.words)]
        if self.kind == "seq2seq":
            return Dataset.from_dict({
                "input_ids": [r.prompt_ids for r in rows],
                "attention_mask": [[1] * len(r.prompt_ids) for r in rows],
                "labels": [r.answer_ids for r in rows],
            })
        return Dataset.from_dict({"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows]})

    def collator(self) -> Any:
        if self.kind == "seq2seq":
            from transformers import DataCollatorForSeq2Seq

            return DataCollatorForSeq2Seq(self.tokenizer, label_pad_token_id=-100)
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        # runtime packing: a batch's examples end to end with their own position ids (SDPA keeps them apart)
        return DataCollatorForLanguageModeling(pad_token_id=self.tokenizer.pad_token_id,
                                               padding_free=RUNTIME.get().packing)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        train_ds = self.encode_split(data.train)
        eval_ds = self.encode_split(data.validation) if len(data.validation) else None
        self.model.train()
        with _without_cache(self.model):
            result = train(
                self.model, params=self.params, train_dataset=train_ds, eval_dataset=eval_ds,
                collator=self.collator(), workdir=workdir, seed=self.ctx.seed,
                use_cpu=self.ctx.torch_device == "cpu", resume=resume,
            )
        lengths = [len(x) + (len(y) if self.kind == "seq2seq" else 0)
                   for x, y in zip(train_ds["input_ids"], train_ds["labels"])]
        result["tokens"] = int(sum(lengths) * result["epochs"])
        result["answer_tokens"] = int(sum(sum(1 for t in y if t != -100) for y in train_ds["labels"]))
        self._prompt_stats.clear()  # validation predictions while training are not the prompts the rung reports
        self.model.eval()
        self.after_fit(workdir)
        return result

    def after_fit(self, workdir: Path) -> None:
        """Hook for rungs that write extra files next to the run (e.g. the soft prompt's nearest tokens)."""

    # -- shipping (peft adapters; full fine-tuning overrides) ---------------------------------------------------------
    def save(self, path: Path) -> None:
        super().save(path)
        save_adapter(self.model, self.tokenizer, path / ADAPTER)

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        method = cls(params, ctx)
        method.setup_formatting()
        method.model = method.place(load_adapter(method.base_model(), path / ADAPTER))
        method.on_loaded()
        return method

    def on_loaded(self) -> None:
        """Hook after :meth:`load` rebuilt the model."""

    @contextlib.contextmanager
    def base_view(self) -> Iterator[torch.nn.Module]:
        with self.model.disable_adapter():
            yield self.model

