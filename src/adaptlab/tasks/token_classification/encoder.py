"""How the encoder rungs (head_only, top_layers, lora, full) learn token classification: a linear layer over each
token's final state (transformers' ``AutoModelForTokenClassification``), trained on word tags.

Alignment: the first sub-token of each word carries the word's tag; the other sub-tokens are ignored by the loss
(``subtokens: all`` gives them the word's I- tag instead). Words whose first sub-token falls past ``max_length`` are
counted (``words_cut``) and predicted O, never dropped silently. A word the tokenizer gives no sub-token at all (a
soft hyphen, a zero-width space) is predicted O too, without counting as cut: every word is matched to its own
sub-tokens by ``word_ids``, never by its place in the sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adaptlab.tasks.token_classification.output import TagOutput

IGNORE = -100


@dataclass(frozen=True)
class WordsSeen:
    """Which words of a sentence the probe has a state for (``words``, in order), of its ``n`` words, and how many
    of the others ``max_length`` cut off (``cut``)."""

    words: list[int]
    n: int
    cut: int


def words_cut(word_ids: list[int | None], n_words: int, max_length: int) -> int:
    """The words ``max_length`` cut off: those after the last word with a sub-token, when the encoding is that long.
    A word without any sub-token elsewhere (or in a sentence that wasn't cut) is not counted: it is predicted O."""
    kept = [w for w in word_ids if w is not None]
    if len(word_ids) < max_length:
        return 0
    return n_words - 1 - max(kept) if kept else n_words


class TokenObjective:
    min_steps = 500  # optimizer steps ``epochs: null`` trains for at least (measured: README)
    peft_task_type = "TOKEN_CLS"
    probe_unit = "word"  # the linear probe classifies each word's frozen state
    default_class_weight = "none"  # O dominates; balanced weights would trade precision for recall on rare types

    def __init__(self, label_names: list[str], subtokens: str = "first"):
        self.label_names = label_names
        self.index = {n: i for i, n in enumerate(label_names)}
        self.subtokens = subtokens

    # -- model ---------------------------------------------------------------------------------------------------
    def build(self, location: str, head: str, model_dir: Any, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(location, **kwargs)

    def load(self, folder: Any, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(str(folder), use_safetensors=True, **kwargs)

    # -- data ----------------------------------------------------------------------------------------------------
    def encode(self, tokenizer: Any, sentences: list[list[str]], tags: list[list[str]] | None,
               max_length: int) -> tuple[dict, list[int]]:
        """Tokenised sentences (with aligned ``labels`` when ``tags`` are given) and the words cut per sentence."""
        if not tokenizer.is_fast:
            from adaptlab.errors import UserError

            raise UserError("token classification needs a fast (Rust) tokenizer to map sub-tokens to words; this "
                            "model's tokenizer is a slow one.")
        enc = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_length)
        cut, labels = [], []
        for i, words in enumerate(sentences):
            word_ids = enc.word_ids(i)
            cut.append(words_cut(word_ids, len(words), max_length))
            if tags is not None:
                labels.append(self._align(word_ids, tags[i]))
        if tags is not None:
            enc["labels"] = labels
        return enc, cut

    def _align(self, word_ids: list[int | None], tags: list[str]) -> list[int]:
        out, previous = [], None
        for w in word_ids:
            if w is None:
                out.append(IGNORE)
            elif w != previous:
                out.append(self.index[tags[w]])
            elif self.subtokens == "all":
                tag = tags[w]
                out.append(self.index["I-" + tag[2:]] if tag.startswith("B-") else self.index[tag])
            else:
                out.append(IGNORE)
            previous = w
        return out

    def dataset(self, tokenizer: Any, split: Any, max_length: int) -> Any:
        from datasets import Dataset

        enc, _ = self.encode(tokenizer, split.tokens, split.tags, max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids", "labels") if k in enc]
        return Dataset.from_dict({k: enc[k] for k in keys})

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    def label_ids(self, split: Any) -> np.ndarray:
        """Every training word's label id (what class weights count)."""
        return np.array([self.index[t] for tags in split.tags for t in tags], dtype=np.int64)

    @torch.inference_mode()
    def word_features(self, body: Any, tokenizer: Any, sentences: list[list[str]], batch_size: int, max_length: int,
                      device: str) -> tuple[list[np.ndarray], list[WordsSeen]]:
        """Each word's frozen state (its first sub-token's last hidden state) per sentence, and which words those
        are (words cut by max_length, and words without a sub-token, have none)."""
        enc, cut = self.encode(tokenizer, sentences, None, max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        out: list[np.ndarray] = [np.zeros(0)] * len(sentences)
        seen: list[WordsSeen] = [WordsSeen([], len(words), c) for words, c in zip(sentences, cut)]
        for start in range(0, len(sentences), batch_size):
            idx = list(range(start, min(start + batch_size, len(sentences))))
            batch = tokenizer.pad({k: [enc[k][i] for i in idx] for k in keys}, return_tensors="pt")
            states = body(**{k: v.to(device) for k, v in batch.items()}).last_hidden_state.float().cpu().numpy()
            for row, i in enumerate(idx):
                first: dict[int, int] = {}
                for position, w in enumerate(enc.word_ids(i)):
                    if w is not None:
                        first.setdefault(w, position)
                words = sorted(first)
                out[i] = states[row, [first[w] for w in words]]
                seen[i] = WordsSeen(words, len(sentences[i]), cut[i])
        return out, seen

    def probe_targets(self, split: Any, seen: list[WordsSeen]) -> np.ndarray:
        """Label ids of the words the probe sees, in order."""
        return np.array([self.index[tags[w]] for tags, s in zip(split.tags, seen) for w in s.words], dtype=np.int64)

    def probe_output(self, probs: list[np.ndarray], seen: list[WordsSeen]) -> TagOutput:
        """Word probabilities per sentence -> tags (words the probe saw no state for: O)."""
        tags = []
        for p, s in zip(probs, seen):
            row = ["O"] * s.n
            for w, k in zip(s.words, p.argmax(axis=1) if len(s.words) else []):
                row[w] = self.label_names[int(k)]
            tags.append(row)
        return TagOutput(tags, words_cut=[s.cut for s in seen])

    # -- prediction ----------------------------------------------------------------------------------------------
    def predict(self, model: Any, tokenizer: Any, sentences: list[list[str]], batch_size: int, max_length: int,
                device: str) -> TagOutput:
        """Tags per word through the same alignment every shipped backend uses (:func:`ship.word_logits`)."""
        from adaptlab.tasks.token_classification.ship import tags_of, torch_backend, word_logits

        logits = word_logits(torch_backend(model, device), tokenizer, sentences, max_length, batch_size)
        _, cut = self.encode(tokenizer, sentences, None, max_length)
        return TagOutput([tags_of(rows, self.label_names) for rows in logits], words_cut=cut)
