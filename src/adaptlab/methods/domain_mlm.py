"""Domain pre-training: continue the encoder's masked-LM training on the task's own unlabelled text.

A pre-training stage, not a classifier: it predicts no labels (``predicts = False``), so it has no place in the
ranking. Other encoder rungs start from it with ``from: domain_mlm`` (head_only, top_layers, lora, full,
linear_probe, setfit; see ``_encoder_start``) and carry its training time in their cost. Its own result is its
masked-LM perplexity on the test split's texts before and after (the same masked positions, seeded), recorded as
its metrics; the report shows it with the gain each rung got from it.

What it reads: the training split's texts (with their text pairs, as the classifiers see them; never the labels,
never the validation or test texts), plus ``extra_text``, a UTF-8 file with one text per line (relative paths are
relative to the ladder's folder). It ships the whole masked-LM model (``weights/mlm/``, safetensors).

A sentence-transformers checkpoint such as MiniLM has no masked-LM head: the head is initialised anew (seeded), so
its perplexity "before" is that of a random head and only "after" says how well the encoder models the domain.

    rungs:
      - {method: domain_mlm, params: {extra_text: reviews_unlabelled.txt}}
      - {method: lora, name: lora_domain, from: domain_mlm}
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.distributed import predicting
from adaptlab.errors import UserError
from adaptlab.methods._encoder_start import ENCODER_INFO, MLM_DIR
from adaptlab.methods.base import METHODS, Method, TorchModelAccounting
from adaptlab.runtime import TRAINER_OPTIONS
from adaptlab.training import VALIDATION_SCORER, TrainParams, train


class DomainMLMParams(TrainParams):
    learning_rate: float = Field(5e-5, gt=0, lt=1, description="Peak learning rate.")
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="Share of tokens masked per text (BERT: 0.15).")
    extra_text: str | None = Field(
        None, description="A UTF-8 text file of more unlabelled in-domain text, one text per line (blank lines "
        "skipped), trained on with the training split's texts. Relative to the ladder's folder.")
    select_best: Literal["loss", "last"] = Field(
        "last", description="Which weights are kept: last (the final ones) or loss (the lowest masked-LM loss on "
        "the validation split's texts). There is no task metric: this rung predicts no labels.")


def read_extra_text(value: str, base_dir: str | None) -> list[str]:
    """The non-blank lines of the ``extra_text`` file; a UserError naming the file when it can't be read as text."""
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir:
        path = Path(base_dir) / path
    where = f"params.extra_text: '{path}'"
    if path.is_dir():
        raise UserError(f"{where} is a folder; give a UTF-8 text file with one text per line.")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{where} can't be read ({exc.strerror or exc}); give a UTF-8 text file, one text per "
                        "line, relative to the ladder's folder.") from None
    nul = raw[: 1 << 16].find(b"\x00")
    if nul >= 0:
        raise UserError(f"{where} looks like a binary file (a NUL byte at offset {nul}), not text.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{where} holds no text (every line is blank).")
    return lines


@predicting
def mlm_perplexity(model: Any, tokenizer: Any, texts: list[str], pairs: list[str] | None, *, max_length: int,
                   batch_size: int, probability: float, seed: int, device: str) -> float | None:
    """exp of the mean cross-entropy on masked tokens, each non-special token masked with ``probability``; the
    masks depend only on ``seed`` and the texts, so two models are compared on the same positions. None when
    nothing was masked (no texts)."""
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask") if k in enc]
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(texts), batch_size):
        batch = tokenizer.pad({k: enc[k][start:start + batch_size] for k in keys}, return_tensors="pt")
        skip = batch.pop("special_tokens_mask").bool() | (batch["attention_mask"] == 0)
        masked = (torch.rand(batch["input_ids"].shape, generator=generator) < probability) & ~skip
        labels = torch.where(masked, batch["input_ids"], torch.full_like(batch["input_ids"], -100))
        batch["input_ids"] = batch["input_ids"].masked_fill(masked, tokenizer.mask_token_id)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten().to(device),
                                                   ignore_index=-100, reduction="sum").item()
        count += int(masked.sum())
    return math.exp(total / count) if count else None


@METHODS.register("domain_mlm")
class DomainMLM(TorchModelAccounting, Method):
    """Every weight of the masked-LM model trains on the task's unlabelled text."""

    Params = DomainMLMParams
    tasks = frozenset({"classification", "embedding"})
    predicts = False
    data_parallel = True
    runtime_options = TRAINER_OPTIONS

    @classmethod
    def input_digest(cls, params: Any, ctx: RunContext) -> str | None:
        """The extra text's lines: an edited file re-runs the rung (and the rungs that start from it)."""
        if params.extra_text is None:
            return None
        try:
            lines = read_extra_text(params.extra_text, ctx.extra.get("base_dir"))
        except UserError:
            return None  # reported by check() before any rung starts
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()

    @classmethod
    def check(cls, params: Any, ctx: RunContext, data: Any) -> list[str]:
        """A bad ``extra_text`` file is reported before any rung starts."""
        if params.extra_text is None:
            return []
        try:
            read_extra_text(params.extra_text, ctx.extra.get("base_dir"))
        except UserError as exc:
            return [str(exc)]
        return []

    def base_mlm(self) -> torch.nn.Module:
        """The base model with a masked-LM head (a new one, seeded, where the checkpoint has none)."""
        from transformers import AutoModelForMaskedLM, set_seed

        from adaptlab.models import load_kwargs

        set_seed(self.ctx.seed)
        kwargs = load_kwargs(self.ctx.model, trust_remote_code=self.ctx.trust_remote_code)
        return AutoModelForMaskedLM.from_pretrained(self.ctx.model.location, **kwargs)

    def setup(self) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.ctx.model.location,
                                                       trust_remote_code=self.ctx.trust_remote_code)
        if self.tokenizer.mask_token is None:
            raise UserError(f"domain_mlm: the tokenizer of '{self.ctx.model_spec}' has no mask token; masked-LM "
                            "pre-training needs an encoder model (BERT-like).")
        self.model = self.base_mlm().to(self.ctx.torch_device)

    @property
    def max_length(self) -> int:
        """data.max_length, clamped (with a warning, recorded in run.json) to what the tokenizer takes."""
        limit = getattr(self.tokenizer, "model_max_length", None) or 0
        if 0 < limit < min(self.ctx.max_length, 1_000_000):
            return self.adjust("data.max_length", self.ctx.max_length, limit,
                               f"the model takes at most {limit} tokens per example")
        return self.ctx.max_length

    def dataset(self, texts: list[str], pairs: list[str] | None) -> Any:
        from datasets import Dataset

        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length,
                             return_special_tokens_mask=True)
        return Dataset.from_dict({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids",
                                                      "special_tokens_mask") if k in enc})

    def training_texts(self, data: Any) -> Any:
        """The training split's texts (and pairs), then the extra text's lines."""
        from datasets import concatenate_datasets

        parts = [self.dataset(data.train.texts, data.train.pairs)]
        if self.params.extra_text is not None:
            parts.append(self.dataset(read_extra_text(self.params.extra_text, self.ctx.extra.get("base_dir")), None))
        return concatenate_datasets(parts) if len(parts) > 1 else parts[0]

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        from transformers import DataCollatorForLanguageModeling

        train_ds = self.training_texts(data)
        validation = data.validation
        eval_ds = self.dataset(validation.texts, validation.pairs) if len(validation) else None
        collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.params.mlm_probability)
        token = VALIDATION_SCORER.set(None)  # no task metric: validation scores the masked-LM loss only
        try:
            self.model.train()
            result = train(self.model, params=self.params, train_dataset=train_ds, eval_dataset=eval_ds,
                           collator=collator, workdir=workdir, seed=self.ctx.seed,
                           use_cpu=self.ctx.torch_device == "cpu", resume=resume)
        finally:
            VALIDATION_SCORER.reset(token)
        self.model.eval()
        result["tokens"] = int(sum(len(x) for x in train_ds["input_ids"]) * result["epochs"])
        result["texts"] = len(train_ds)
        return result

    def perplexity(self, model: torch.nn.Module, split: Any) -> float | None:
        return mlm_perplexity(model, self.tokenizer, split.texts, split.pairs, max_length=self.max_length,
                              batch_size=self.params.eval_batch_size, probability=self.params.mlm_probability,
                              seed=self.ctx.seed, device=self.ctx.torch_device)

    def own_metrics(self, split: Any) -> dict[str, Any]:
        """Masked-LM perplexity on the test texts, of the base model (with the same seeded head) and of this one."""
        before = self.perplexity(self.base_mlm().to(self.ctx.torch_device), split)
        after = self.perplexity(self.model, split)
        return {"perplexity_before": before, "perplexity_after": after, "perplexity_texts": len(split.texts)}

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        raise UserError("domain_mlm predicts no labels: it is a pre-training stage; start a classifier rung from it "
                        "(from: domain_mlm).")

    def save(self, path: Path) -> None:
        folder = path / MLM_DIR
        self.model.save_pretrained(str(folder))  # safetensors
        self.tokenizer.save_pretrained(str(folder))
        (path / ENCODER_INFO).write_text(json.dumps({"prefix": self.model.base_model_prefix}), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        method = cls(params, ctx)
        method.tokenizer = AutoTokenizer.from_pretrained(str(path / MLM_DIR))
        method.model = AutoModelForMaskedLM.from_pretrained(str(path / MLM_DIR), use_safetensors=True)
        method.model.to(ctx.torch_device).eval()
        return method
