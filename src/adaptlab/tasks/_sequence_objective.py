"""How the encoder rungs learn text classification: one vector per text (the head, see
:mod:`adaptlab.methods._heads`) into a new linear layer, trained with (optionally class-weighted) cross-entropy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from adaptlab.distributed import predicting


class SequenceObjective:
    min_steps = 150  # optimizer steps ``epochs: null`` trains for at least (measured: README)
    peft_task_type = "SEQ_CLS"
    probe_unit = "text"  # the linear probe classifies each text's sentence embedding
    default_class_weight = "balanced"

    def __init__(self, label_names: list[str]):
        self.label_names = label_names

    def build(self, location: str, head: str, model_dir: Any, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModel, AutoModelForSequenceClassification

        from adaptlab.methods._heads import PooledClassifier, pooling_of

        if head == "pooler":
            return AutoModelForSequenceClassification.from_pretrained(location, **kwargs)
        body = AutoModel.from_pretrained(location, **kwargs)
        return PooledClassifier(body, len(self.label_names), pooling_of(model_dir, head))

    def load(self, folder: Any, **kwargs: Any) -> torch.nn.Module:
        from adaptlab.methods._heads import load_classifier

        return load_classifier(folder, **kwargs)

    def dataset(self, tokenizer: Any, split: Any, max_length: int) -> Any:
        from datasets import Dataset

        enc = tokenizer(split.texts, split.pairs, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        columns = {k: enc[k] for k in keys}
        columns["labels"] = [int(x) for x in split.labels]
        return Dataset.from_dict(columns)

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def label_ids(self, split: Any) -> np.ndarray:
        return np.asarray(split.labels, dtype=np.int64)

    @predicting
    def predict(self, model: Any, tokenizer: Any, inputs: tuple[list[str], list[str] | None], batch_size: int,
                max_length: int, device: str) -> np.ndarray:
        """Class probabilities, one row per text."""
        texts, pairs = inputs
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float32)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer.pad({k: [enc[k][i] for i in idx] for k in keys}, return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            out[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
        return out
