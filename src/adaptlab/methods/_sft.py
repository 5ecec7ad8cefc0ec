"""Supervised fine-tuning of a generative model: the shared ``fit`` of lm_lora, lm_ia3, lm_full and prompt_tuning.

Each training example is the prompt followed by its answer (for classification: the label's word; for generation:
the reference), encoded by :class:`~adaptlab.generation.formatting.Formatter` exactly as it is scored later. The
loss is on the answer tokens only: prompt positions carry the label -100 (trl's collator pads them; for seq2seq the
answer is the decoder target). Training itself is adaptlab's :func:`adaptlab.training.train` (HF Trainer with
atomic checkpoints and resume). Subclasses choose what trains in :meth:`adapt`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.errors import UserError, did_you_mean
from adaptlab.methods._causal import Dtype, GenerativeMethod, split_examples
from adaptlab.methods.base import Method
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


class SFTMethod(GenerativeMethod):
    """A generative rung whose weights (or adapters, or soft prompt) train on prompt -> answer pairs."""

    Params: ClassVar[type] = SFTParams
    trains: ClassVar[bool] = True

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

        return DataCollatorForLanguageModeling(pad_token_id=self.tokenizer.pad_token_id)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        train_ds = self.encode_split(data.train)
        eval_ds = self.encode_split(data.validation) if len(data.validation) else None
        self.model.train()
        result = train(
            self.model, params=self.params, train_dataset=train_ds, eval_dataset=eval_ds, collator=self.collator(),
            workdir=workdir, seed=self.ctx.seed, use_cpu=self.ctx.torch_device == "cpu", resume=resume,
        )
        lengths = [len(x) + (len(y) if self.kind == "seq2seq" else 0)
                   for x, y in zip(train_ds["input_ids"], train_ds["labels"])]
        result["tokens"] = int(sum(lengths) * result["epochs"])
        result["answer_tokens"] = int(sum(sum(1 for t in y if t != -100) for y in train_ds["labels"]))
        self.model.eval()
        self.after_fit(workdir)
        return result

    def after_fit(self, workdir: Path) -> None:
        """Hook for rungs that write extra files next to the run (e.g. the soft prompt's nearest tokens)."""

    # -- shipping (peft adapters; full fine-tuning overrides) ---------------------------------------------------------
    def save(self, path: Path) -> None:
        super().save(path)
        self.model.save_pretrained(str(path / ADAPTER))  # adapter_model.safetensors + adapter_config.json
        self.tokenizer.save_pretrained(str(path / ADAPTER))

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        from peft import PeftModel

        method = cls(params, ctx)
        method.setup_formatting()
        base = method.base_model()
        method.model = PeftModel.from_pretrained(base, str(path / ADAPTER)).to(ctx.torch_device)
        method.model.eval()
        method.on_loaded()
        return method

    def on_loaded(self) -> None:
        """Hook after :meth:`load` rebuilt the model."""

    @contextlib.contextmanager
    def base_view(self) -> Iterator[torch.nn.Module]:
        with self.model.disable_adapter():
            yield self.model


def peft_task_type(kind: str) -> Any:
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM if kind == "seq2seq" else TaskType.CAUSAL_LM


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Short names of the model's linear layers (nn.Linear and GPT-2's Conv1D), the targets adapters can wrap."""
    from transformers.pytorch_utils import Conv1D

    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))})


def target_problems(targets: list[str] | str | None, ctx: RunContext, rung: str, generative: bool) -> list[str]:
    """:func:`check_targets` before any rung starts, on the model's structure only: it is built from its config on
    the meta device, so no weights are read. Empty when the targets are fine (or the structure cannot be built;
    the check in ``adapt`` still runs then)."""
    if not targets or isinstance(targets, str):
        return []
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    from adaptlab.generation import lm

    try:
        config = lm.load_config(ctx.model, ctx.trust_remote_code)
        kind = lm.model_kind(config)
        auto = (AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM) if generative and \
            kind != "encoder" else AutoModelForSequenceClassification
        with torch.device("meta"):
            model = auto.from_config(config, trust_remote_code=ctx.trust_remote_code)
    except Exception:  # noqa: BLE001 - a structure we cannot build here is checked when the rung loads it
        return []
    try:
        check_targets(model, targets, rung)
    except UserError as e:
        return [str(e)]
    return []


def check_targets(model: torch.nn.Module, targets: list[str] | str | None, rung: str) -> None:
    """UserError naming the linear layers when ``targets`` names layers the model doesn't have."""
    if not targets or isinstance(targets, str):
        return
    known = linear_layer_names(model)
    missing = [t for t in targets if t not in known]
    if missing:
        hints = "".join(did_you_mean(t, known) for t in missing)
        raise UserError(f"{rung}.params.target_modules: {missing} not found in {type(model).__name__}.{hints} "
                        f"Linear layers: {', '.join(known)}")
