"""SetFit: contrastive fine-tuning of the sentence-transformer body on pairs of training texts (same label: pulled
together, different labels: pushed apart), then a logistic-regression head on the tuned embeddings. Made for few
examples per class (8-64). Trained with the ``setfit`` library (``Trainer``, ``TrainingArguments``, ``SetFitModel``).

Shipped as safetensors only, never pickle (setfit's own ``save_pretrained`` writes the scikit-learn head with
joblib): ``weights/body/`` is the tuned SentenceTransformer folder and ``weights/head.safetensors`` the head's
weights, one row per label; prediction is ``softmax(embedding @ weight.T + bias)``, the same probabilities as the
fitted LogisticRegression's ``predict_proba``. It can start from a domain_mlm rung (``from: domain_mlm``).

    rungs:
      - {method: setfit, params: {num_iterations: 20, body_learning_rate: 2.0e-5}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from adaptlab.context import RunContext
from adaptlab.methods._embedding import softmax
from adaptlab.methods._encoder_start import ENCODER_PARENTS, StartsFromEncoder, load_encoder
from adaptlab.methods.base import METHODS, Method
from adaptlab.search_space import Choice, Range

BODY, HEAD = "body", "head.safetensors"


class SetFitParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    num_iterations: int = Field(20, gt=0, description="Pairs drawn per training text and epoch (setfit's "
                                "num_iterations): 2 x num_iterations x texts pairs, half same-label, half not.")
    epochs: int = Field(1, gt=0, description="Passes over the pairs while tuning the body.")
    body_learning_rate: float = Field(2e-5, gt=0, lt=1, description="Learning rate of the body's contrastive "
                                      "tuning.")
    batch_size: int = Field(16, gt=0, description="Pairs per optimizer step.")
    max_steps: int | None = Field(None, gt=0, description="Stop the body's tuning after this many steps.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Fraction of the body's steps with linear warm-up.")
    C: float = Field(1.0, gt=0, description="The head's inverse L2 regularisation (LogisticRegression).")
    max_iter: int = Field(1000, gt=0, description="The head's solver iterations.")
    class_weight: Literal["balanced", "none"] | None = Field(
        None, description="The head's class weights: balanced (n / (classes x count)) or none. Default (null): the "
        "task's choice (balanced for classification).")
    eval_batch_size: int = Field(64, gt=0, description="Texts per forward pass when embedding.")


@METHODS.register("setfit")
class SetFit(StartsFromEncoder, Method):
    """The whole body trains (contrastively), then the head is fitted on its embeddings."""

    Params = SetFitParams
    starts_from = ENCODER_PARENTS
    search_space = {"body_learning_rate": Range(low=1e-5, high=1e-4, log=True),
                    "num_iterations": Choice(values=(10, 20, 40))}

    def build_body(self, location: str, local: bool) -> Any:
        """A SentenceTransformer on the device; its transformer's pooler (unused by sentence pooling) dropped, so
        it neither counts nor ships as trained."""
        from sentence_transformers import SentenceTransformer

        body = SentenceTransformer(location, device=self.ctx.torch_device, local_files_only=local,
                                   trust_remote_code=self.ctx.trust_remote_code)
        body.max_seq_length = self.ctx.max_length
        transformer = body[0].auto_model
        if getattr(transformer, "pooler", None) is not None:
            transformer.pooler = None
        return body

    def setup(self) -> None:
        from transformers import set_seed

        set_seed(self.ctx.seed)
        self.body = self.build_body(self.ctx.model.location, self.ctx.model.source != "hub")
        if self.start_state is not None:
            load_encoder(self.body[0].auto_model, self.start_state, str(self.start_source))
        self.head: dict[str, np.ndarray] = {}

    def join(self, texts: list[str], pairs: list[str] | None) -> list[str]:
        """A text pair as one text, joined by the tokenizer's separator (as the embedding rungs do)."""
        if pairs is None:
            return list(texts)
        sep = getattr(self.body.tokenizer, "sep_token", None) or "\n"
        return [f"{a} {sep} {b}" for a, b in zip(texts, pairs)]

    def head_model(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        weighted = (self.params.class_weight or "balanced") == "balanced"
        return LogisticRegression(C=self.params.C, max_iter=self.params.max_iter, random_state=self.ctx.seed,
                                  class_weight="balanced" if weighted else None)

    def arguments(self, workdir: Path) -> Any:
        from setfit import TrainingArguments

        p = self.params
        return TrainingArguments(
            output_dir=str(workdir / "checkpoints"), batch_size=p.batch_size, num_epochs=p.epochs,
            num_iterations=p.num_iterations, body_learning_rate=p.body_learning_rate, max_steps=p.max_steps or -1,
            warmup_proportion=p.warmup_ratio, max_length=self.ctx.max_length, seed=self.ctx.seed,
            report_to="none", save_strategy="no", show_progress_bar=False, logging_steps=10)

    def fit(self, data: Any, workdir: Path, resume: bool = False) -> dict[str, Any]:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer

        from adaptlab.methods.linear_probe import _full_rows

        texts = self.join(data.train.texts, data.train.pairs)
        labels = [int(y) for y in data.train.labels]
        model = SetFitModel(model_body=self.body, model_head=self.head_model())
        trainer = Trainer(model=model, args=self.arguments(workdir),
                          train_dataset=Dataset.from_dict({"text": texts, "label": labels}))
        quiet(trainer.st_trainer)
        trainer.train()
        clf = model.model_head
        self.head = _full_rows(clf, self.ctx.num_labels, int(clf.coef_.shape[1]))
        history = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h["embedding_loss"]}
                   for h in trainer.st_trainer.state.log_history if "embedding_loss" in h]
        pairs = trainer.st_trainer.state.global_step * self.params.batch_size
        return {"history": history, "samples": pairs, "steps": trainer.st_trainer.state.global_step,
                "class_weights": clf.class_weight}

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        joined = self.join(texts, pairs)
        if not joined:
            return np.zeros((0, self.ctx.num_labels), dtype=np.float32)
        x = self.body.encode(joined, batch_size=self.params.eval_batch_size, convert_to_numpy=True,
                             show_progress_bar=False).astype(np.float32)
        return softmax(x @ self.head["weight"].T + self.head["bias"])

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.body.save(str(path / BODY), safe_serialization=True)
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.head.items()}, path / HEAD)

    @classmethod
    def load(cls, path: Path, params: Any, ctx: RunContext) -> Method:
        method = cls(params, ctx)
        method.body = method.build_body(str(path / BODY), local=True)
        method.head = {k: v.numpy() for k, v in load_file(path / HEAD).items()}
        return method

    # -- accounting: every weight of the body trains, and the head's rows --------------------------------------
    def parameter_counts(self) -> tuple[int, int]:
        n = sum(p.numel() for p in self.body.parameters()) + sum(v.size for v in self.head.values())
        return int(n), int(n)

    def trainable_state(self) -> dict[str, Any]:
        state = {f"body.{k}": p.detach().clone() for k, p in self.body.named_parameters()}
        return {**state, **{f"head.{k}": torch.from_numpy(v.copy()) for k, v in self.head.items()}}


def quiet(st_trainer: Any) -> None:
    """No progress bar or raw log dicts on stdout (as adaptlab's own training); progress goes through the pipeline's
    step reporter when it has one."""
    from transformers import PrinterCallback, ProgressCallback

    from adaptlab.training import STEP_REPORTER, StepReporter

    st_trainer.args.disable_tqdm = True
    st_trainer.args.dataloader_pin_memory = False  # pinned memory only helps a GPU
    st_trainer.remove_callback(PrinterCallback)
    st_trainer.remove_callback(ProgressCallback)
    if STEP_REPORTER.get() is not None:
        st_trainer.add_callback(StepReporter(STEP_REPORTER.get()))
