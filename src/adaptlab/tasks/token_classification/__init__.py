"""Token classification (named-entity recognition): a tag per word. Primary metric: entity micro-F1 (seqeval).

Data (see :mod:`.data`): CoNLL files, JSONL rows of tokens + tags, or text + character spans; IO, BIO and BIOES tags
are read into BIO (:mod:`.schemes`). Methods predict BIO tags per word (``predict_tags``); the encoder rungs train
a per-token head through :class:`.encoder.TokenObjective` (the first sub-token of each word carries its tag).
Records hold the words, gold and predicted tags, and both as entities with character offsets.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from adaptlab.errors import DataError
from adaptlab.tasks import TASKS
from adaptlab.tasks._unjudged import Unjudged
from adaptlab.tasks.token_classification.data import (
    TokenData,
    TokenSplit,
    build_data,
    read_spans,
    read_tagged,
    unseen_types,
)
from adaptlab.tasks.token_classification.output import TagOutput, entities_of
from adaptlab.tasks.token_classification.schemes import SCHEMES


class TokenClassificationSettings(BaseModel):
    """``task:`` settings of token classification."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["token_classification"] = "token_classification"
    tokens_column: str = Field("tokens", description="Column with the words of a sentence (a list).")
    tags_column: str = Field("tags", description="Column with one tag per word (a list): O, B-/I-/E-/S-<type>.")
    spans_column: str = Field("spans", description="Alternative to tokens + tags: column with character spans "
                              '[{"start", "end", "label"}] over the text in data.text_column.')
    scheme: Literal[SCHEMES] = Field("auto", description="Tag scheme of the data: IO, BIO, BIOES, or auto "  # type: ignore[valid-type]
                                     "(BIOES if any S-/E- tag, BIO if any B-, else IO). Everything is read into BIO.")
    subtokens: Literal["first", "all"] = Field(
        "first", description="Which sub-tokens of a word carry its tag in training: first (the rest are ignored) or "
        "all (continuations take the word's I- tag). Predictions always read the first sub-token.")
    entity_descriptions: dict[str, str] | None = Field(
        None, description="What each entity type means, for the prompting rungs (default: the type name).")
    primary_metric: Literal["entity_micro_f1", "entity_macro_f1"] = Field(
        "entity_micro_f1", description="The metric that ranks the rungs.")


@TASKS.register("token_classification")
class TokenClassificationTask(Unjudged):
    Settings = TokenClassificationSettings
    export_kind = "tagger"  # what `adaptlab export` ships for its runs
    primary_metric = "entity_micro_f1"
    stratify_role = None  # sentences have no single label to keep the mix of
    latency_examples = 50

    @property
    def selection_metric(self) -> str:
        """Validation ranks checkpoints and tuning trials by the primary metric."""
        return self.primary_metric

    def prepare(self, spec: Any, frames: dict[str, pd.DataFrame]) -> TokenData:
        settings: TokenClassificationSettings = spec.task
        self.primary_metric = settings.primary_metric
        rows, ids = {}, {}
        for name in ("train", "validation", "test"):
            frame = frames.get(name, frames["train"].iloc[0:0])
            rows[name], ids[name] = self._rows(spec, settings, frame, name), _ids(frame)
        data = build_data(rows, ids, settings.scheme, frames["train"].attrs.get("source", "the training data"))
        unseen = unseen_types(data)
        if unseen:
            name, kind, sentence_ids = unseen[0]
            source = frames.get(name, frames["train"]).attrs.get("source", name)
            more = f" ({len(unseen) - 1} more such types)" if len(unseen) > 1 else ""
            shown = ", ".join(sentence_ids[:5])
            raise DataError(f"{source}: entity type {kind!r} (rows {shown}) is in the {name} split "
                            f"but never in training{more}, so no model can learn it: add training sentences with "
                            "it, or retag it as O.")
        return data

    @staticmethod
    def _rows(spec: Any, settings: TokenClassificationSettings, frame: pd.DataFrame, name: str) -> list[tuple]:
        if len(frame) == 0:
            if name == "validation":
                return []
            raise DataError(f"the {name} split has no sentences; give more data or smaller test_size.")
        source = frame.attrs.get("source", name)
        if settings.spans_column in frame.columns:
            _need(frame, [spec.data.text_column, settings.spans_column], source)
            return read_spans(frame, spec.data.text_column, settings.spans_column, source)
        _need(frame, [settings.tokens_column, settings.tags_column], source, settings)
        return read_tagged(frame, settings.tokens_column, settings.tags_column, source)

    def fingerprint(self, data: TokenData) -> str:
        payload = [[name, s.ids, s.tokens, s.tags, s.texts] for name, s in
                   (("train", data.train), ("validation", data.validation), ("test", data.test))]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def inputs(self, split: TokenSplit) -> list[str]:
        """Each sentence's text: what the overlap check compares."""
        return split.texts

    def predict(self, method: Any, split: TokenSplit) -> list[dict]:
        output: TagOutput = method.predict_tags(split.tokens)
        records = []
        for i, tags in enumerate(output.tags):
            text, offsets = split.texts[i], split.offsets[i]
            records.append({
                "id": split.ids[i], "text": text, "tokens": split.tokens[i],
                "reference": split.tags[i], "prediction": tags,
                "gold_entities": entities_of(split.tags[i], text, offsets),
                "entities": entities_of(tags, text, offsets),
                "words_cut": output.words_cut[i], "unparsed": output.unparsed[i],
            })
        return records

    def predict_one(self, method: Any, split: TokenSplit, i: int) -> Any:
        return method.predict_tags([split.tokens[i]])

    def score(self, records: list[dict], meta: dict) -> dict[str, float]:
        """Entity micro/macro scores, token accuracy and the unparsed share, without intervals (cheap: run at each
        validation)."""
        from adaptlab.tasks.token_classification.metrics import entity_scores

        metrics = entity_scores([r["reference"] for r in records], [r["prediction"] for r in records],
                                meta["entity_types"])
        return {**metrics, "unparsed_share": _unparsed_share(records)}

    def evaluate(self, records: list[dict], meta: dict) -> dict:
        from adaptlab.tasks.token_classification.metrics import entity_metrics

        result = entity_metrics([r["reference"] for r in records], [r["prediction"] for r in records],
                                meta["entity_types"], meta.get("seed", 0))
        n = len(records)
        result["metrics"]["unparsed_share"] = _unparsed_share(records)
        return {**result, "n": n, "words_cut": int(sum(r.get("words_cut", 0) for r in records)),
                "tag_repairs": meta.get("tag_repairs", {}), "scheme": meta.get("scheme")}

    def baselines(self, data: TokenData, seed: int) -> dict[str, dict]:
        """Each test word tagged with the tag it most often has in training (O when unseen): memorising names."""
        from adaptlab.tasks.token_classification.metrics import entity_metrics

        if not len(data.test) or not len(data.train):
            return {}
        seen: dict[str, dict[str, int]] = {}
        for words, tags in zip(data.train.tokens, data.train.tags):
            for w, t in zip(words, tags):
                seen.setdefault(w.lower(), {}).setdefault(t, 0)
                seen[w.lower()][t] += 1
        guess = [[max(seen[w.lower()].items(), key=lambda kv: kv[1])[0] if w.lower() in seen else "O" for w in s]
                 for s in data.test.tokens]
        result = entity_metrics(data.test.tags, guess, data.entity_types, seed)
        return {"memorised_tags": {
            "value": result["metrics"][self.primary_metric], "interval": result["interval"][self.primary_metric],
            "note": "every test word gets its most frequent training tag (O when never seen)",
        }}

    def diagnose(self, records: list[dict], fit: dict, data: TokenData) -> dict:
        """Degenerate when the rung finds no entity at all, doubted when it finds under a tenth of the gold ones."""
        found = sum(len(r["entities"]) for r in records)
        gold = sum(len(r["gold_entities"]) for r in records)
        findings = []
        if gold and found < 0.1 * gold:
            findings.append(f"predicts {found} entities where the test split has {gold}")
        return {"degenerate": found == 0 and gold > 0, "doubted": bool(findings), "findings": findings,
                "advice": "train longer (more epochs or a higher learning rate) or check the tags" if findings else ""}

    def paired_test(self, best: list[dict], other: list[dict], metric: str) -> dict:
        """Paired bootstrap over sentences on the entity metric (it has no per-sentence value)."""
        from adaptlab.tasks.token_classification.report import paired_test

        return paired_test(best, other, metric)

    def report_sections(self, runs: list[Any]) -> list[Any]:
        """Entity F1 per type, the best rung's type confusion and its worst sentences highlighted."""
        from adaptlab.tasks.token_classification.report import report_sections

        return report_sections(runs)

    def encoder_objective(self, label_names: list[str], settings: TokenClassificationSettings) -> Any:
        from adaptlab.tasks.token_classification.encoder import TokenObjective

        return TokenObjective(label_names, settings.subtokens)


def _unparsed_share(records: list[dict]) -> float:
    """Share of records whose generated answer could not be read (0 without records)."""
    return sum(bool(r.get("unparsed")) for r in records) / len(records) if records else 0.0


def _ids(frame: pd.DataFrame) -> list[str]:
    rows = frame["_row"] if "_row" in frame.columns else range(1, len(frame) + 1)
    return [str(r) for r in rows]


def _need(frame: pd.DataFrame, columns: list[str], source: str, settings: Any = None) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        hint = (" (or a text column and a spans column of character spans)" if settings else "")
        raise DataError(f"{source}: no column {missing[0]!r}; the columns are {list(frame.columns)[:10]}. Token "
                        f"classification reads a tokens column and a tags column{hint}: set task.tokens_column / "
                        "task.tags_column (or task.spans_column) to the right names.")


__all__ = ["TokenClassificationSettings", "TokenClassificationTask", "TokenData", "TokenSplit"]
