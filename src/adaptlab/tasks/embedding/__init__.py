"""Sentence embeddings: a rung maps texts to L2-normalised vectors, and the task scores what their cosines say.

Four data formats (:mod:`.data`, read by :mod:`.read`): scored pairs (STS: Spearman of cosine vs gold score),
labelled pairs (NLI / paraphrase: average precision of the cosine for the positive labels), triplets (anchor closer
to the positive than the negative) and retrieval (each query ranks its split's corpus: MRR@10, recall@k, nDCG@k).
Metrics and their intervals: :mod:`.metrics`; records: :mod:`.records`; report and paired tests: :mod:`.report`.

Real data offline: the ``chitchat`` builtin read as retrieval, each conversation context searching for its true
next reply among the test split's replies, with no conversation on both sides of the split::

    task: {type: embedding}            # context/reply columns: detected as retrieval
    data: {builtin: chitchat, group_column: conversation_id, test_size: 0.05, validation_size: 0.0,
           max_train_examples: 2000, max_test_examples: 300}

Rungs implement ``encode(texts) -> np.ndarray`` (see :mod:`.data`). The classification encoder rungs can't learn
this task (:meth:`EmbeddingTask.encoder_objective`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from adaptlab.data.split import drop_shared_groups
from adaptlab.errors import DataError, UserError
from adaptlab.reporting.sections import RunResults, Section
from adaptlab.tasks import TASKS
from adaptlab.tasks._unjudged import Unjudged
from adaptlab.tasks.embedding import read
from adaptlab.tasks.embedding.data import EmbeddingData, EmbeddingSplit
from adaptlab.tasks.embedding.settings import DEFAULT_PRIMARY, EmbeddingSettings, primary_problem

SPLITS = ("train", "validation", "test")


@TASKS.register("embedding")
class EmbeddingTask(Unjudged):
    Settings = EmbeddingSettings
    export_kind = "embedder"  # what `adaptlab export` ships for its runs
    primary_metric = "mrr_at_10"  # set from the data's format (or task.primary_metric) by prepare
    stratify_role = None  # pairs and queries have no single label to keep the mix of
    latency_examples = 50

    @property
    def selection_metric(self) -> str:
        """Validation ranks checkpoints and tuning trials by the primary metric."""
        return self.primary_metric

    def __init__(self) -> None:
        self.format: str | None = None
        self.k: list[int] = [1, 5, 10]
        self.label_names: list[str] = []
        self.positive: set[str] = set()

    # -- data -----------------------------------------------------------------------------------------------------
    def prepare(self, spec: Any, frames: dict[str, pd.DataFrame]) -> EmbeddingData:
        settings: EmbeddingSettings = spec.task
        fmt, cols = read.resolve_columns(settings, frames["train"])
        primary = settings.primary_metric or DEFAULT_PRIMARY[fmt]
        problem = primary_problem(primary, fmt, settings.k)
        if problem:
            raise UserError(f"task.primary_metric: {problem}.")
        frames, dropped = drop_shared_groups(frames, spec.data.group_column)
        frames = {name: frames.get(name, frames["train"].iloc[0:0]) for name in SPLITS}
        _check_sizes(frames, dropped, spec.data.group_column)
        for frame in frames.values():
            _need(frame, cols)
        self.format, self.primary_metric, self.k = fmt, primary, list(settings.k)
        self.label_names, self.positive = [], set()
        if fmt == "retrieval":
            corpus = read.read_corpus(_corpus_frame(spec, settings), settings) if settings.corpus else ([], [])
            splits = {name: read.retrieval_split(f, cols, corpus, dedupe=name != "train")
                      for name, f in frames.items()}
        else:
            if fmt == "labelled_pairs":
                found = {v for f in frames.values() for v in read.labels(f, cols["label"])}
                self.label_names = sorted(found)
                self.positive = read.positive_labels(self.label_names, settings, frames["train"].attrs.get("source"))
            if fmt == "scored_pairs":
                read.check_score_range(list(frames.values()), cols["score"], settings.score_range)
            splits = {name: read.pair_split(f, fmt, cols, settings, self.label_names) for name, f in frames.items()}
        data = EmbeddingData(fmt, splits["train"], splits["validation"], splits["test"], list(self.label_names))
        for name in ("validation", "test"):
            _check_scorable(data, splits[name], name, self.positive, frames[name].attrs.get("source", name))
        return data

    def fingerprint(self, data: EmbeddingData) -> str:
        from adaptlab.runs.provenance import hash_records

        rows: list[Any] = [[data.format, data.label_names]]
        for name, s in (("train", data.train), ("validation", data.validation), ("test", data.test)):
            rows.append([name, s.ids, s.first, s.second, s.negative, s.score, s.label, s.corpus_ids, s.corpus,
                         s.relevant])
        return hash_records(rows)

    def inputs(self, split: EmbeddingSplit) -> list[str]:
        """What the overlap check compares: each query (retrieval), else each pair's two texts, joined."""
        from adaptlab.data.overlap import joined

        if self._format() == "retrieval":
            return list(split.first)
        return [joined(a, b) for a, b in zip(split.first, split.second)]

    def encoder_objective(self, label_names: list[str], settings: Any) -> Any:
        raise UserError("the encoder rungs (head_only, top_layers, lora, full) train classifiers and can't learn "
                        "sentence embeddings; use the embedding rungs (see `adaptlab methods`).")

    # -- predictions ----------------------------------------------------------------------------------------------
    def predict(self, method: Any, split: EmbeddingSplit) -> list[dict]:
        """One record per pair, triplet or query (fields: :mod:`.records`)."""
        from adaptlab.tasks.embedding.records import build

        return build(split, self._format(), method.encode, label_names=self.label_names, positive=self.positive,
                     k=self.k)

    def predict_one(self, method: Any, split: EmbeddingSplit, i: int) -> Any:
        """Embed example ``i``'s texts alone (a query alone for retrieval: the corpus is indexed beforehand)."""
        if self._format() == "retrieval":
            return method.encode([split.first[i]])
        return method.encode([split.first[i], split.second[i], *([split.negative[i]] if split.negative else [])])

    def _format(self) -> str:
        if self.format is None:
            raise UserError("the embedding task predicts only after prepare() has read the data.")
        return self.format

    # -- metrics --------------------------------------------------------------------------------------------------
    def score(self, records: list[dict], meta: dict) -> dict[str, float]:
        """The format's metrics (meta["format"]) without intervals (cheap: run at each validation)."""
        from adaptlab.tasks.embedding.metrics import score

        return score(records, meta["format"])

    def evaluate(self, records: list[dict], meta: dict) -> dict:
        from adaptlab.tasks.embedding.metrics import evaluate

        if not records:
            raise DataError("no test examples to score: the test split is empty; give more data or a larger "
                            "data.test_size.")
        result = evaluate(records, meta["format"], meta.get("seed", 0))
        return {**result, "n": len(records), "format": meta["format"]}

    def baselines(self, data: EmbeddingData, seed: int) -> dict[str, dict]:
        """TF-IDF cosine (word unigrams, sublinear tf, IDF from the training and test texts; no label used): the
        lexical reference point every embedding rung should clear."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        from adaptlab.tasks.embedding.metrics import evaluate
        from adaptlab.tasks.embedding.records import build

        if not len(data.test):
            return {}
        try:
            vectorizer = TfidfVectorizer(sublinear_tf=True).fit(data.train.texts + data.test.texts)
        except ValueError:  # no word in any text (e.g. only punctuation): no lexical baseline
            return {}
        records = build(data.test, data.format, vectorizer.transform, label_names=data.label_names,
                        positive=self.positive, k=self.k)
        result = evaluate(records, data.format, seed)
        return {"tfidf_cosine": {
            "value": result["metrics"][self.primary_metric], "interval": result["interval"].get(self.primary_metric),
            "note": "cosine of TF-IDF word vectors (IDF from the training and test texts): lexical overlap alone",
        }}

    def diagnose(self, records: list[dict], fit: dict, data: EmbeddingData) -> dict:
        """Degenerate when every cosine the rung gives is the same (its embeddings collapsed to one direction);
        doubted when they all lie within 0.01 of each other."""
        cosines = _cosines(records, data.format)
        if not len(cosines):
            return {"degenerate": False, "doubted": False, "findings": [], "advice": ""}
        spread = float(np.ptp(cosines))
        findings = []
        if spread < 0.01:
            findings.append(f"every cosine lies within {spread:.2g} of {float(np.mean(cosines)):.3f}: the embeddings "
                            "have (nearly) collapsed to one direction")
        return {"degenerate": spread < 1e-6, "doubted": bool(findings), "findings": findings,
                "advice": "lower the learning rate or train on more varied pairs" if findings else ""}

    # -- report ---------------------------------------------------------------------------------------------------
    def paired_test(self, best: list[dict], other: list[dict], metric: str) -> dict:
        """Per-query/per-triplet values paired directly; Spearman, Pearson and the labelled-pair scores by a paired
        bootstrap over pairs."""
        from adaptlab.tasks.embedding.report import paired_test

        return paired_test(best, other, metric)

    def report_sections(self, runs: list[RunResults]) -> list[Section]:
        """Every metric of every rung, then the best rung's hardest examples (worst-ranked queries with their top
        hits, or the pairs its cosine gets most wrong)."""
        from adaptlab.tasks.embedding.report import report_sections

        return report_sections(runs)


def _corpus_frame(spec: Any, settings: EmbeddingSettings) -> pd.DataFrame:
    from adaptlab.data.readers import read_table

    path = spec.resolve_path(settings.corpus)
    frame = read_table(path, encoding=spec.data.encoding)
    frame.attrs["source"] = str(path)
    return frame


def _check_sizes(frames: dict[str, pd.DataFrame], dropped: int, group_column: str | None) -> None:
    if len(frames["train"]) == 0 and dropped:
        raise DataError(f"every training row shares a data.group_column ('{group_column}') value with a test row, so "
                        "none is left to train on; use more groups or a smaller data.test_size.")
    for name in ("train", "test"):
        if len(frames[name]) == 0:
            raise DataError(f"the {name} split has no rows; give more data or a smaller data.test_size.")


def _need(frame: pd.DataFrame, cols: dict[str, str]) -> None:
    """A DataError when a split's file lacks a column the training file has."""
    missing = [c for c in cols.values() if c not in frame.columns]
    if missing:
        source = frame.attrs.get("source", "data")
        raise DataError(f"{source}: no column '{missing[0]}', which the training data has; give every split the same "
                        "columns.")


def _check_scorable(data: EmbeddingData, split: EmbeddingSplit, name: str, positive: set[str], source: str) -> None:
    """An evaluation split must let its metric be computed (scores that vary; positive and negative pairs)."""
    if not len(split):
        return
    fix = " (or data.validation_size: 0)" if name == "validation" else ""
    if data.format == "scored_pairs" and len(set(split.score)) < 2:
        raise DataError(f"{source}: every pair of the {name} split has the same score, so no correlation can be "
                        f"measured; give pairs of different similarity{fix}.")
    if data.format == "labelled_pairs":
        kinds = {data.label_names[i] in positive for i in split.label}
        if len(kinds) < 2:
            which = "positive" if True in kinds else "negative"
            raise DataError(f"{source}: every pair of the {name} split is {which} (task.positive_labels: "
                            f"{sorted(positive)}), so the cosine's separation can't be measured; give both "
                            f"kinds{fix}.")


def _cosines(records: list[dict], fmt: str) -> np.ndarray:
    """Every cosine the records hold."""
    if fmt == "retrieval":
        return np.array([s for r in records for s in r["top_scores"]], dtype=np.float64)
    if fmt == "triplets":
        return np.array([c for r in records for c in (r["cosine_positive"], r["cosine_negative"])], dtype=np.float64)
    return np.array([r["prediction"] for r in records], dtype=np.float64)


__all__ = ["EmbeddingData", "EmbeddingSettings", "EmbeddingSplit", "EmbeddingTask"]
