"""Shared body of the sentence-embedding rungs (task ``embedding``): a sentence-transformers model trained with one
of its losses by :func:`adaptlab.training.train` (atomic checkpoints, exact resume, best validation weights).

A rung says only which rows of :class:`~adaptlab.tasks.embedding.data.EmbeddingData` it learns from
(:meth:`SentenceMethod.columns`), which formats it accepts and which loss it trains (:meth:`SentenceMethod.loss`).
Loading the base, LoRA (``params.lora``), the step schedule, encoding, saving and accounting live here once.

What ``weights/`` holds (:meth:`SentenceMethod.save`):

- ``model/``: a whole SentenceTransformer folder (safetensors), loadable with ``SentenceTransformer(folder)``;
- ``adapter/`` (``lora: true``): the sentence-transformers folder of the adapter alone: peft's
  ``adapter_config.json`` + ``adapter_model.safetensors`` and the module configs, no base weights. Rebuild with
  ``SentenceTransformer(base)`` then ``.load_adapter(folder, adapter_name=...)``; one base serves many adapters
  (``set_adapter(name)`` per request, ``disable_adapters()`` for the base itself).
"""

from __future__ import annotations

import functools
import math
import random
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.methods._encoder_start import ENCODER_PARENTS, StartsFromEncoder, load_encoder
from adaptlab.methods.base import Method, TorchModelAccounting
from adaptlab.training import Schedule, TrainParams, train

MODEL_DIR, ADAPTER_DIR = "model", "adapter"
#: Validation rows the loss is evaluated on (the task's metric always scores the whole validation split).
EVAL_ROWS = 512
#: The file of the loss's own weights (SoftmaxLoss' classifier, TSDAE's decoder) inside a checkpoint.
LOSS_STATE = "loss_state.safetensors"


class SentenceParams(TrainParams):
    """Training settings of the sentence-embedding rungs."""

    learning_rate: float | None = Field(  # type: ignore[assignment]
        None, gt=0, lt=1, description="Peak learning rate. Default (null): the rung's choice for full fine-tuning "
        "(5e-5; TSDAE 3e-5), 5e-4 with lora.")
    batch_size: int = Field(32, gt=0, description="Examples per optimizer step (per device); in-batch negatives "
                            "losses (MNR) see batch_size - 1 negatives per example.")
    max_evaluations: int = Field(
        8, gt=0, description="At most this many validation evaluations over the whole run, the last step's included "
        "(each scores the validation split with the task's metric): evals_per_epoch is thinned out when many epochs "
        "would ask more.")
    lora: bool = Field(False, description="Train LoRA adapters on the encoder instead of every weight; the rung "
                       "then ships only the adapter.")
    lora_r: int = Field(8, gt=0, description="With lora: adapter rank.")
    lora_alpha: float = Field(16, gt=0, description="With lora: scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="With lora: dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        None, description="With lora: linear layer names to adapt (default: peft's choice, query/value for BERT).")


class SentenceMethod(StartsFromEncoder, TorchModelAccounting, Method):
    """A SentenceTransformer over the run's base model, trained with a sentence-transformers loss; with
    ``from: domain_mlm`` over that rung's pre-trained encoder (shipped with a LoRA adapter, see ``_encoder_start``)."""

    Params = SentenceParams
    tasks = frozenset({"embedding"})
    runtime_options = frozenset({"precision", "optimizer"})  # sentence-transformers' Trainer
    starts_from = ENCODER_PARENTS
    #: Data formats the rung learns from.
    formats: ClassVar[tuple[str, ...]] = ()
    #: ``learning_rate: null`` without lora.
    default_learning_rate: ClassVar[float] = 5e-5
    #: ``min_steps: null``: the fewest optimizer steps (small data trains for several epochs to reach them).
    default_min_steps: ClassVar[int] = 150

    # -- what a rung decides -----------------------------------------------------------------------------------
    def columns(self, split: Any, data: Any) -> dict[str, list]:
        """The training columns of ``split`` in the order the loss reads them (a label column last)."""
        raise NotImplementedError

    def loss(self, data: Any) -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def data_problems(cls, params: Any, data: Any) -> list[str]:
        """What makes ``data`` unusable for this rung (beyond its format)."""
        return []

    # -- checks ------------------------------------------------------------------------------------------------
    @classmethod
    def check(cls, params: Any, ctx: RunContext, data: Any) -> list[str]:
        from adaptlab.methods._peft import target_problems

        fmt = data.format  # the embedding task's data (these rungs run on no other task)
        if fmt not in cls.formats:
            return [f"{cls.name} learns from {' or '.join(cls.formats)} data, not {fmt}: {cls.advice(fmt)}"]
        problems = cls.data_problems(params, data)
        if params.lora:
            problems += target_problems(params.target_modules, ctx, cls.name, generative=False)
        return problems

    @classmethod
    def advice(cls, fmt: str) -> str:
        """Which rungs suit data of format ``fmt``."""
        suits = {"scored_pairs": "embedding_cosine, embedding_mnr (pairs above positive_score) or embedding_tsdae",
                 "labelled_pairs": "embedding_softmax, embedding_mnr (the task's positive_labels) or embedding_tsdae",
                 "triplets": "embedding_mnr, embedding_triplet or embedding_tsdae",
                 "retrieval": "embedding_mnr, embedding_triplet or embedding_tsdae"}
        return f"use {suits.get(fmt, 'another rung')} for {fmt}."

    # -- model -------------------------------------------------------------------------------------------------
    def base(self) -> Any:
        """The base model as a SentenceTransformer on the run's device (mean pooling when it declares none), its
        encoder replaced by the domain_mlm rung's when the rung starts from one."""
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(self.ctx.model.location, device=self.ctx.torch_device,
                                    trust_remote_code=self.ctx.trust_remote_code,
                                    local_files_only=self.ctx.model.source != "hub")
        model.max_seq_length = self.ctx.max_length
        if self.start_state is not None:
            load_encoder(model.transformers_model, self.start_state, str(self.start_source))
        return model

    def sentence_model(self) -> Any:
        """The SentenceTransformer it encodes with (what an export merges and converts)."""
        return self.model

    def setup(self) -> None:
        from transformers import set_seed

        set_seed(self.ctx.seed)
        self.model = self.base()
        for name, p in self.model.named_parameters():  # sentence pooling never reads transformers' pooler layer
            if ".pooler." in name:
                p.requires_grad_(False)
        self.prepare()
        if self.params.lora:
            self.add_lora()
        self.model.eval()

    def prepare(self) -> None:
        """Before LoRA is added (TSDAE ties its decoder to the encoder here)."""

    def add_lora(self) -> None:
        from peft import TaskType

        from adaptlab.methods._peft import check_targets, linear_layer_names, lora_config

        encoder, p = self.model.transformers_model, self.params
        check_targets(encoder, p.target_modules, self.name)
        config = lora_config(encoder, TaskType.FEATURE_EXTRACTION, r=p.lora_r, alpha=p.lora_alpha,
                             dropout=p.lora_dropout, targets=p.target_modules)
        try:
            self.model.add_adapter(config)
        except ValueError as e:
            raise UserError(f"{self.name}: {e} Set {self.name}.params.target_modules (linear layers: "
                            f"{', '.join(linear_layer_names(encoder))}).") from None

    # -- training ----------------------------------------------------------------------------------------------
    def training_params(self) -> SentenceParams:
        """The params with the rung's defaults filled in (learning rate, min_steps) and the evaluations thinned to
        at most ``max_evaluations``."""
        p = self.params
        lr = p.learning_rate or (5e-4 if p.lora else self.default_learning_rate)
        return p.model_copy(update={"learning_rate": lr, "min_steps": p.min_steps or self.default_min_steps})

    def eval_steps(self, params: SentenceParams, examples: int) -> int | None:
        """Steps between validation evaluations: evals_per_epoch, but at most max_evaluations in the run."""
        if not params.evals_per_epoch:
            return None
        schedule = Schedule.resolve(params, examples)
        every = max(1, schedule.steps_per_epoch // params.evals_per_epoch)
        return max(every, math.ceil(schedule.steps / params.max_evaluations))

    def datasets(self, data: Any) -> tuple[Any, Any]:
        from datasets import Dataset

        train_cols = self.columns(data.train, data)
        if not train_cols or not len(next(iter(train_cols.values()))):
            raise UserError(f"{self.name}: nothing to train on in the training split ({len(data.train)} rows): "
                            f"{self.advice(data.format)}")
        eval_cols = self.columns(data.validation, data) if len(data.validation) else {}
        rows = len(next(iter(eval_cols.values()))) if eval_cols else 0
        eval_ds = Dataset.from_dict({k: v[:EVAL_ROWS] for k, v in eval_cols.items()}) if rows else None
        return Dataset.from_dict(train_cols), eval_ds

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        from transformers import set_seed

        train_ds, eval_ds = self.datasets(data)
        set_seed(self.ctx.seed)  # the loss's own layers (SoftmaxLoss' classifier) start the same every run
        loss = self.loss(data)
        params = self.training_params()
        self.model.train()
        result = train(
            self.model, params=params, train_dataset=train_ds, eval_dataset=eval_ds, workdir=workdir,
            seed=self.ctx.seed, use_cpu=self.ctx.torch_device == "cpu", resume=resume,
            trainer_cls=loss_state_trainer(), args_kwargs=self.trainer_args(),
            trainer_kwargs={"loss": loss, "eval_every": self.eval_steps(params, len(train_ds))},
        )
        self.model.eval()
        result["tokens"] = int(self.count_tokens(train_ds) * result["epochs"])
        return result

    def trainer_args(self) -> dict[str, Any]:
        """SentenceTransformerTrainingArguments fields of this rung (e.g. its batch sampler)."""
        return {}

    def count_tokens(self, dataset: Any) -> int:
        """Tokens of the training texts, truncated as the model reads them."""
        tokenizer, total = self.model.tokenizer, 0
        for name in dataset.column_names:
            values = list(dataset[name])
            if values and isinstance(values[0], str):
                ids = tokenizer(values, truncation=True, max_length=self.model.max_seq_length)["input_ids"]
                total += sum(len(x) for x in ids)
        return total

    # -- prediction --------------------------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        if not texts:
            return np.zeros((0, self.model.get_embedding_dimension()), dtype=np.float32)
        self.model.eval()
        with torch.no_grad():
            vectors = self.model.encode(list(texts), batch_size=self.params.eval_batch_size, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
        return vectors.astype(np.float32)

    # -- saving ------------------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        folder = path / (ADAPTER_DIR if self.params.lora else MODEL_DIR)
        self.model.save(str(folder), create_model_card=False, safe_serialization=True)
        if self.params.lora:  # the adapter applies to the encoder it started from (a whole model ships it anyway)
            self.save_start(path)

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        from sentence_transformers import SentenceTransformer

        method = cls(params, ctx)
        if params.lora:
            method.restore_start(path)
            method.model = method.base()
            method.model.load_adapter(str(path / ADAPTER_DIR))
        else:
            method.model = SentenceTransformer(str(path / MODEL_DIR), device=ctx.torch_device,
                                               local_files_only=True)
            method.model.max_seq_length = ctx.max_length
        method.model.eval()
        return method


# -- data helpers ----------------------------------------------------------------------------------------------


def positive_pairs(split: Any, data: Any, min_score: float, labels: set[int]) -> tuple[list[str], list[str]]:
    """(first, second) of the rows that are positives: retrieval and triplet rows, scored pairs with score >=
    ``min_score``, labelled pairs with a label in ``labels``."""
    if data.format in ("retrieval", "triplets"):
        return list(split.first), list(split.second)
    if data.format == "scored_pairs":
        keep = [i for i, s in enumerate(split.score or []) if s >= min_score]
    else:
        keep = [i for i, y in enumerate(split.label or []) if y in labels]
    return [split.first[i] for i in keep], [split.second[i] for i in keep]


def drawn_negatives(split: Any, seed: int) -> list[str]:
    """For each retrieval query, the document of another row that is not relevant to it, drawn with ``seed``."""
    rng = random.Random(seed)
    docs = list(split.second)
    relevant = split.relevant or [[] for _ in docs]
    text_of = dict(zip(split.corpus_ids, split.corpus))
    negatives = []
    for i, positive in enumerate(docs):
        avoid = {positive, *(text_of.get(c) for c in relevant[i])}
        choice = docs[rng.randrange(len(docs))]
        for _ in range(20):  # a few random tries, then the first document that is not relevant to the query
            if choice not in avoid:
                break
            choice = docs[rng.randrange(len(docs))]
        if choice in avoid:
            choice = next((d for d in docs if d not in avoid), None)
        if choice is None:
            raise UserError(f"training query {split.ids[i]!r} has every training document as relevant, so no negative "
                            "can be drawn for it; use embedding_mnr (in-batch negatives) or add documents.")
        negatives.append(choice)
    return negatives


def delete_words(texts: list[str], ratio: float, seed: int) -> list[str]:
    """TSDAE's noise without NLTK: drop each whitespace token with probability ``ratio`` (seeded), keeping at
    least one."""
    rng = random.Random(seed)
    noisy = []
    for text in texts:
        words = text.split()
        kept = [w for w in words if rng.random() >= ratio]
        if words and not kept:
            kept = [words[rng.randrange(len(words))]]
        noisy.append(" ".join(kept))
    return noisy


# -- a trainer whose checkpoints carry the loss's own weights ---------------------------------------------------


def loss_only_parameters(loss: torch.nn.Module, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The loss module's parameters that are not the model's (SoftmaxLoss' classifier, TSDAE's decoder layers)."""
    own = {id(p) for p in model.parameters()}
    return {n: p for n, p in loss.named_parameters() if id(p) not in own}


@functools.cache
def loss_state_trainer() -> type:
    """SentenceTransformerTrainer whose checkpoints also hold the loss's own weights, so a resumed SoftmaxLoss or
    TSDAE run continues exactly (sentence-transformers checkpoints only the model). Its ``_save_checkpoint`` runs
    inside :class:`~adaptlab.training.AtomicCheckpoints`' scratch folder, so the extra file is atomic with the
    rest. ``eval_every`` (a constructor argument) sets the steps between validation evaluations, which
    :func:`~adaptlab.training.train` derives from the epochs alone."""
    from sentence_transformers import SentenceTransformerTrainer

    class LossStateTrainer(SentenceTransformerTrainer):
        def __init__(self, *args: Any, eval_every: int | None = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            if eval_every and self.args.eval_strategy != "no":  # fewer validation evaluations than train() asks
                self.args.eval_steps = eval_every

        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            """No model card: the rung saves without one, so skip collecting its data (a progress bar, dataset
            statistics)."""

        def _save_checkpoint(self, model, trial):
            from safetensors.torch import save_file

            super()._save_checkpoint(model, trial)
            extra = loss_only_parameters(self.loss, self.model)
            if extra:
                folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
                save_file({n: p.detach().cpu().contiguous() for n, p in extra.items()}, folder / LOSS_STATE)

        def _load_from_checkpoint(self, checkpoint_path, *args, **kwargs):
            from safetensors.torch import load_file

            super()._load_from_checkpoint(checkpoint_path, *args, **kwargs)
            file = Path(checkpoint_path) / LOSS_STATE
            if file.is_file():
                extra = loss_only_parameters(self.loss, self.model)
                with torch.no_grad():
                    for name, value in load_file(file).items():
                        extra[name].copy_(value.to(extra[name].device, extra[name].dtype))

    return LossStateTrainer
