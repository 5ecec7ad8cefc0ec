"""Text classification (single text or text pair -> one label). Primary metric: macro-F1."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from adaptlab.errors import DataError
from adaptlab.reporting.sections import RunResults, Section
from adaptlab.tasks import TASKS, _classification_report
from adaptlab.tasks._settings import TaskSpec
from adaptlab.tasks._unjudged import Unjudged

log = logging.getLogger(__name__)

#: The prediction of a method that gave no answer (e.g. free text naming no label); it is never right.
NO_ANSWER = "(no answer)"


@dataclass
class Split:
    """One split of a classification dataset. `ids` point back to the source rows."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray | list[int]) -> Split:
        idx = list(index)
        return Split(
            ids=[self.ids[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx],
            pairs=[self.pairs[i] for i in idx] if self.pairs is not None else None,
        )


@dataclass
class ClassificationData:
    label_names: list[str]
    train: Split
    validation: Split
    test: Split
    label_descriptions: dict[str, str] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def present_labels(self) -> list[str]:
        """The labels that occur in the training or test split, in label order: macro metrics average over these."""
        seen = set(self.train.labels.tolist()) | set(self.test.labels.tolist())
        return [name for i, name in enumerate(self.label_names) if i in seen]

    def meta(self) -> dict[str, Any]:
        return {"label_names": self.label_names, "label_descriptions": self.label_descriptions,
                "macro_labels": self.present_labels}


def _warn_absent_labels(data: ClassificationData) -> None:
    """Declared labels that never occur would only add zeros to macro averages: say which are left out."""
    absent = [n for n in data.label_names if n not in set(data.present_labels)]
    if absent:
        shown = ", ".join(repr(n) for n in absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        log.warning(
            "task.labels: %d of the %d declared labels never occur in the training or test split (%s); macro "
            "metrics average over the %d labels that do (recorded as macro_labels in metrics.json).",
            len(absent), len(data.label_names), shown, len(data.label_names) - len(absent),
        )


def _warn_label_mix(data: ClassificationData) -> None:
    """Labels that differ only in case or spacing (two classes the user may have meant as one), and training classes
    the test split has no example of (their F1 there is 0 whatever a rung does, which lowers every macro average)."""
    from adaptlab.data.overlap import normalise

    by_key: dict[str, list[str]] = {}
    for name in data.label_names:
        by_key.setdefault(normalise(name), []).append(name)
    alike = [names for names in by_key.values() if len(names) > 1]
    if alike:
        shown = "; ".join(" / ".join(repr(n) for n in names) for names in alike[:5])
        log.warning("labels that differ only in case or spacing are separate classes: %s. Write each class one way "
                    "if they are one.", shown)
    if len(data.test):
        trained, tested = set(data.train.labels.tolist()), set(data.test.labels.tolist())
        absent = [n for i, n in enumerate(data.label_names) if i in trained and i not in tested]
        if absent:
            log.warning("the test split has no example of %s: macro metrics count their F1 as 0 for every rung. Give "
                        "the test split examples of every class.", ", ".join(repr(n) for n in absent[:10]))


def _label_set(spec: Any, cleaned: dict[str, pd.DataFrame]) -> list[str]:
    """task.labels, else the sorted training labels; a label outside the set in any split is a DataError."""
    column = spec.data.label_column
    label_names = list(spec.task.labels) if spec.task.labels else sorted(set(cleaned["train"][column]))
    known = set(label_names)
    for split_name, frame in cleaned.items():
        unknown = sorted(set(frame[column]) - known) if len(frame) else []
        if unknown:
            source = frame.attrs.get("source", split_name)
            raise DataError(
                f"{source}: label(s) {unknown[:10]} in the {split_name} split are not in the label set "
                f"{label_names}; add them to task.labels or fix the rows."
            )
    return label_names


def _descriptions(spec: Any, label_names: list[str]) -> dict[str, str]:
    descriptions = {name: name for name in label_names}
    for name, desc in (spec.task.label_descriptions or {}).items():
        if name not in descriptions:
            raise DataError(f"task.label_descriptions: '{name}' is not a label; labels are {label_names}.")
        descriptions[name] = desc
    return descriptions


def _to_split(frame: pd.DataFrame, data: Any, label_names: list[str]) -> Split:
    if len(frame) == 0:
        return Split(ids=[], texts=[], labels=np.zeros(0, dtype=np.int64), pairs=None)
    index = {name: i for i, name in enumerate(label_names)}
    rows = frame["_row"] if "_row" in frame else pd.Series(range(1, len(frame) + 1), index=frame.index)
    return Split(
        ids=[str(r) for r in rows],
        texts=frame[data.text_column].tolist(),
        labels=np.array([index[v] for v in frame[data.label_column]], dtype=np.int64),
        pairs=frame[data.text_pair_column].tolist() if data.text_pair_column else None,
    )


def _scored(records: list[dict], meta: dict) -> dict[str, Any]:
    """The metrics of prediction records and what their intervals need: label indices, columns, macro labels."""
    from adaptlab.evaluation.metrics import classification_metrics

    names = meta["label_names"]
    index = {n: i for i, n in enumerate(names)}
    refs = np.array([index[r["reference"]] for r in records], dtype=np.int64)
    # No answer (prediction None) is an extra column that is never right; macro averages stay over the labels.
    preds = np.array([index[r["prediction"]] if r["prediction"] is not None else len(names) for r in records],
                     dtype=np.int64)
    k = len(names) + int((preds == len(names)).any())
    shown = names if k == len(names) else [*names, NO_ANSWER]
    result = classification_metrics(refs, preds, shown)
    per_class = {n: result["per_class"][n] for n in names}
    # Macro averages run over the labels present in the data (train or test): a declared label that never
    # occurs would only add a 0 to every average. Without that in meta, over the labels given.
    macro_labels = [n for n in meta.get("macro_labels") or names if n in per_class] or names
    metrics = {"accuracy": result["accuracy"]}
    for m in ("precision", "recall", "f1"):
        metrics[f"macro_{m}"] = float(np.mean([per_class[n][m] for n in macro_labels]))
    return {"metrics": metrics, "result": result, "refs": refs, "preds": preds, "k": k, "shown": shown,
            "macro_labels": macro_labels}


@TASKS.register("classification")
class ClassificationTask(Unjudged):
    Settings = TaskSpec
    export_kind = "classifier"  # what `adaptlab export` ships for its runs
    primary_metric = "macro_f1"
    stratify_role = "label_column"  # splits keep the label mix
    latency_examples = 50

    @property
    def selection_metric(self) -> str:
        """Validation ranks checkpoints and tuning trials by the primary metric."""
        return self.primary_metric

    def prepare(self, spec: Any, frames: dict[str, pd.DataFrame]) -> ClassificationData:
        from adaptlab.data.columns import check_columns, clean_label_column, clean_text_column

        data = spec.data
        roles = {"text": data.text_column, "label": data.label_column}
        if data.text_pair_column:
            roles["text_pair"] = data.text_pair_column
        cleaned: dict[str, pd.DataFrame] = {}
        for split_name, frame in frames.items():
            source = frame.attrs.get("source", split_name)
            if len(frame) == 0 and split_name == "validation":
                cleaned[split_name] = frame
                continue
            check_columns(frame, roles, source)
            frame = frame.copy()
            frame[data.text_column] = clean_text_column(frame, data.text_column, source)
            if data.text_pair_column:
                frame[data.text_pair_column] = clean_text_column(frame, data.text_pair_column, source)
            min_classes = 2 if split_name == "train" else 1  # a held-out split may hold a single class
            frame[data.label_column] = clean_label_column(frame, data.label_column, source, min_classes=min_classes,
                                                            split=split_name)
            cleaned[split_name] = frame

        label_names = _label_set(spec, cleaned)
        descriptions = _descriptions(spec, label_names)

        def to_split(frame: pd.DataFrame) -> Split:
            return _to_split(frame, data, label_names)

        prepared = ClassificationData(
            label_names=label_names,
            train=to_split(cleaned["train"]),
            validation=to_split(cleaned.get("validation", cleaned["train"].iloc[0:0])),
            test=to_split(cleaned["test"]),
            label_descriptions=descriptions,
        )
        _warn_absent_labels(prepared)
        _warn_label_mix(prepared)
        return prepared

    def fingerprint(self, data: ClassificationData) -> str:
        from adaptlab.runs.provenance import hash_records

        return hash_records([[name, s.ids, s.texts, s.pairs, s.labels.tolist()] for name, s in
                             (("train", data.train), ("validation", data.validation), ("test", data.test))])

    def inputs(self, split: Split) -> list[str]:
        """Each example's text (joined with its pair, if any): what the overlap check compares."""
        from adaptlab.data.overlap import joined

        return split.texts if split.pairs is None else [joined(t, p) for t, p in zip(split.texts, split.pairs)]

    def strata(self, data: ClassificationData) -> list[str]:
        """Each training example's label: a data-efficiency curve draws its sizes per class."""
        return [data.label_names[i] for i in data.train.labels.tolist()]

    def encoder_objective(self, label_names: list[str], settings: Any) -> Any:
        """The head and encoding of the encoder rungs (head_only, top_layers, lora, full) for this task."""
        from adaptlab.tasks._sequence_objective import SequenceObjective

        return SequenceObjective(label_names)

    def predict(self, method: Any, split: Split) -> list[dict]:
        probs = np.asarray(method.predict_proba(split.texts, split.pairs), dtype=np.float64)
        names = method.label_names
        records = []
        for i, row in enumerate(probs):
            rec = {"id": split.ids[i], "text": split.texts[i]}
            if split.pairs is not None:
                rec["text_pair"] = split.pairs[i]
            rec["reference"] = names[int(split.labels[i])] if len(split.labels) else None
            answered = bool(np.isfinite(row).all())  # a row of NaN: the method gave no answer (counts as wrong)
            rec["prediction"] = names[int(np.argmax(row))] if answered else None
            rec["scores"] = {n: round(float(p), 6) if answered else None for n, p in zip(names, row)}
            records.append(rec)
        return records

    def predict_one(self, method: Any, split: Split, i: int) -> Any:
        """One example's class probabilities, for latency."""
        return method.predict_proba([split.texts[i]], [split.pairs[i]] if split.pairs else None)

    def score(self, records: list[dict], meta: dict) -> dict[str, float]:
        """Accuracy and macro precision/recall/F1, without intervals (cheap: run at each validation)."""
        return _scored(records, meta)["metrics"]

    def evaluate(self, records: list[dict], meta: dict) -> dict:
        from adaptlab.evaluation.stats import bootstrap_classification

        scored = _scored(records, meta)
        names, k, macro_labels, result = meta["label_names"], scored["k"], scored["macro_labels"], scored["result"]
        # The no-answer column and labels absent from the test references (they are never a reference, so never
        # right) score 0 in every resample, so a macro interval over k columns is |macro_labels|/k of ours.
        scale = {"macro_f1": k / len(macro_labels), "accuracy": 1.0}
        interval = {
            m: [x * scale[m] for x in bootstrap_classification(scored["refs"], scored["preds"], k, metric=m,
                                                                seed=meta.get("seed", 0))]
            for m in ("macro_f1", "accuracy")
        }
        return {
            "metrics": scored["metrics"],
            "interval": interval,
            "per_class": {n: result["per_class"][n] for n in names},
            "confusion_matrix": result["confusion_matrix"],
            "labels": scored["shown"],
            "macro_labels": macro_labels,
            "labels_not_in_data": [n for n in names if n not in macro_labels],
            "n": len(records),
        }

    def baselines(self, data: ClassificationData, seed: int) -> dict[str, dict]:
        """The majority class of the training split predicted for every test example: the floor every trained rung
        must clear (its macro-F1 is the majority class's F1 over the number of labels)."""
        if not len(data.test) or not len(data.train):
            return {}
        top = data.label_names[int(np.bincount(data.train.labels).argmax())]
        records = [{"id": i, "reference": data.label_names[int(y)], "prediction": top}
                   for i, y in zip(data.test.ids, data.test.labels)]
        result = self.evaluate(records, {**data.meta(), "seed": seed})
        return {"majority_class": {
            "value": result["metrics"][self.primary_metric], "interval": result["interval"][self.primary_metric],
            "note": f"always '{top}', the most frequent training label",
        }}

    def diagnose(self, records: list[dict], fit: dict, data: ClassificationData) -> dict:
        from adaptlab.evaluation.diagnosis import diagnose_classification

        # Only a classification head's cross-entropy compares with the label prior's (not e.g. an LM's token loss).
        losses = [h["loss"] for h in fit.get("history", []) if "loss" in h] if fit.get("classification_loss") else []
        counts = np.bincount(data.train.labels, minlength=data.num_labels).tolist()
        return diagnose_classification(
            [r["prediction"] for r in records], [r["reference"] for r in records], train_counts=counts,
            losses=losses, class_weighted=fit.get("class_weights") is not None,
        )

    # -- report ---------------------------------------------------------------------------------------------------
    def paired_test(self, best: list[dict], other: list[dict], metric: str) -> dict:
        """McNemar's test on per-example correctness, whatever the metric (macro-F1 has no per-example value)."""
        return _classification_report.paired_test(best, other)

    def report_sections(self, runs: list[RunResults]) -> list[Section]:
        """Each rung's confusion matrix, and the wrong predictions each rung was most confident in."""
        return _classification_report.report_sections(runs)
