"""The classification head of the encoder rungs: how a sentence becomes one vector, and the layer on top.

``head`` (a parameter of every encoder rung that trains):

- ``pooler``: transformers' ``AutoModelForSequenceClassification``: the first token's state through the base
  model's pretrained pooler layer (dense + tanh), dropout, then a new linear layer. The standard architecture:
  merged and ONNX exports and multi-adapter serving take it as it is.
- ``cls``: the first token's final hidden state straight into a new linear layer (no pooler, no dropout).
- ``mean``: the mean of the token states over the attention mask into a new linear layer.
- ``sentence_transformers``: the pooling the model folder's sentence-transformers config declares
  (``1_Pooling/config.json``: cls, mean or max; mean when there is none), into a new linear layer. MiniLM was trained
  with mean pooling; its pooler layer was not part of that training (the default, measured: README).

The last three are :class:`PooledClassifier` (``AutoModel`` body + pooling + linear), saved as the body's
transformers folder plus ``classifier.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

Head = Literal["pooler", "cls", "mean", "sentence_transformers"]
CLASSIFIER_FILE = "classifier.safetensors"
HEAD_FILE = "head.json"


def sentence_pooling(model_dir: Path) -> str:
    """The pooling a model folder's sentence-transformers config declares (``1_Pooling/config.json``): cls, max or
    mean; mean when it has none."""
    try:
        modes = json.loads((Path(model_dir) / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "mean"
    return "cls" if modes.get("pooling_mode_cls_token") else "max" if modes.get("pooling_mode_max_tokens") else "mean"


def pooling_of(model_dir: Path, head: str) -> str:
    """cls, mean or max for a :class:`PooledClassifier` head, reading the sentence-transformers config when asked."""
    return sentence_pooling(model_dir) if head == "sentence_transformers" else head


def pool(states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """One vector per sequence: the first token's state (cls), or the mean or maximum over unmasked tokens."""
    if pooling == "cls":
        return states[:, 0]
    mask = attention_mask if attention_mask is not None else torch.ones(states.shape[:2], device=states.device)
    mask = mask.unsqueeze(-1).to(states.dtype)
    if pooling == "max":
        return states.masked_fill(mask == 0, -1e9).max(dim=1).values
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class PooledClassifier(torch.nn.Module):
    """An encoder body, a pooling of its token states and a new linear layer: logits like a transformers classifier.

    The body's pretrained pooler layer, if it has one, is dropped: it is not used, so it must not count as trained.
    """

    def __init__(self, body: torch.nn.Module, num_labels: int, pooling: str):
        super().__init__()
        if pooling not in ("cls", "mean", "max"):
            raise ValueError(f"pooling must be cls, mean or max, not {pooling!r}")
        if getattr(body, "pooler", None) is not None:
            body.pooler = None
        # The body sits under the architecture's own prefix (``bert`` for BERT) and the linear layer is
        # ``classifier``, as in transformers' classifiers: weight and adapter names are the same as theirs.
        self.base_model_prefix = body.base_model_prefix or "body"
        self.add_module(self.base_model_prefix, body)
        self.pooling = pooling
        self.config = body.config
        self.classifier = torch.nn.Linear(body.config.hidden_size, num_labels)

    @property
    def body(self) -> torch.nn.Module:
        return getattr(self, self.base_model_prefix)

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        """Checkpointing (runtime: gradient_checkpointing) is the body's; pooling and the linear layer keep little."""
        self.body.activation_checkpointing_enable(**kwargs)

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """The same, under the name transformers used before 5.20."""
        self.body.gradient_checkpointing_enable(**kwargs)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs: Any):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        states = self.body(**inputs).last_hidden_state
        logits = self.classifier(pool(states, attention_mask, self.pooling))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        """The body as a transformers folder (safetensors), the linear layer and the pooling beside it."""
        folder = Path(folder)
        self.body.save_pretrained(str(folder), safe_serialization=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()}
        save_file(state, folder / CLASSIFIER_FILE)
        head = {"pooling": self.pooling, "num_labels": self.classifier.out_features}
        (folder / HEAD_FILE).write_text(json.dumps(head), encoding="utf-8")

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs: Any) -> PooledClassifier:
        from transformers import AutoModel

        folder = Path(folder)
        head = json.loads((folder / HEAD_FILE).read_text(encoding="utf-8"))
        body = AutoModel.from_pretrained(str(folder), use_safetensors=True, **kwargs)
        model = cls(body, head["num_labels"], head["pooling"])
        model.classifier.load_state_dict(load_file(folder / CLASSIFIER_FILE))
        return model


def load_classifier(folder: str | Path, **kwargs: Any) -> torch.nn.Module:
    """A saved sequence classifier: adaptlab's :class:`PooledClassifier` where the folder has its ``head.json``,
    else transformers' ``AutoModelForSequenceClassification`` (safetensors only)."""
    from transformers import AutoModelForSequenceClassification

    if (Path(folder) / HEAD_FILE).is_file():
        return PooledClassifier.from_folder(folder, **kwargs)
    return AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True, **kwargs)
