"""Frames -> sentence-embedding data: which columns hold what, every cell checked, retrieval corpora built.

The format and columns come from the settings, or from the first of :data:`COLUMN_SETS` whose columns the training
frame has (a column set in the settings replaces the set's own column for that role). Every problem is a DataError
naming the file, the rows (the ``_row`` data row numbers, which survive the split) and the fix.

Retrieval: each split searches its own documents (distinct texts of the second column) plus the extra corpus file,
if any. A document found in the corpus file keeps that file's id; any other is named ``row-<first data row>``.
A query repeated in the validation or test split is scored once, with every document given for it relevant; the
training split keeps every (query, document) row.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from adaptlab.data.columns import ROW_COLUMN, clean_label_column, clean_text_column, normalise_label, row_numbers
from adaptlab.errors import DataError, did_you_mean
from adaptlab.tasks.embedding.data import EmbeddingSplit
from adaptlab.tasks.embedding.settings import POSITIVE_WORDS, EmbeddingSettings

#: (format, {role: column}) in the order ``format: auto`` tries them.
COLUMN_SETS: tuple[tuple[str, dict[str, str]], ...] = (
    ("triplets", {"first": "anchor", "second": "positive", "negative": "negative"}),
    ("triplets", {"first": "query", "second": "positive", "negative": "negative"}),
    ("scored_pairs", {"first": "sentence1", "second": "sentence2", "score": "score"}),
    ("scored_pairs", {"first": "sentence1", "second": "sentence2", "score": "similarity"}),
    ("scored_pairs", {"first": "text1", "second": "text2", "score": "score"}),
    ("labelled_pairs", {"first": "premise", "second": "hypothesis", "label": "label"}),
    ("labelled_pairs", {"first": "sentence1", "second": "sentence2", "label": "label"}),
    ("labelled_pairs", {"first": "question1", "second": "question2", "label": "is_duplicate"}),
    ("labelled_pairs", {"first": "text1", "second": "text2", "label": "label"}),
    ("retrieval", {"first": "query", "second": "document"}),
    ("retrieval", {"first": "query", "second": "positive"}),
    ("retrieval", {"first": "anchor", "second": "positive"}),
    ("retrieval", {"first": "query", "second": "passage"}),
    ("retrieval", {"first": "question", "second": "answer"}),
    ("retrieval", {"first": "context", "second": "reply"}),
)
MAX_LISTED = 10


def configured_columns(settings: EmbeddingSettings) -> dict[str, str | None]:
    """{role: the column the settings name for it, or None}."""
    return {"first": settings.first_column, "second": settings.second_column, "negative": settings.negative_column,
            "score": settings.score_column, "label": settings.label_column,
            "relevant_id": settings.relevant_id_column}


def roles_of(fmt: str, settings: EmbeddingSettings) -> tuple[str, ...]:
    """The columns a format reads (retrieval with relevant_id_column names documents by id, not text)."""
    if fmt == "retrieval":
        return ("first", "relevant_id") if settings.relevant_id_column else ("first", "second")
    return {"scored_pairs": ("first", "second", "score"), "labelled_pairs": ("first", "second", "label"),
            "triplets": ("first", "second", "negative")}[fmt]


def resolve_columns(settings: EmbeddingSettings, frame: pd.DataFrame) -> tuple[str, dict[str, str]]:
    """(format, {role: column}) for these settings and the training frame; DataError when nothing fits."""
    source = frame.attrs.get("source", "train")
    columns = [str(c) for c in frame.columns if c != ROW_COLUMN]
    given = {r: c for r, c in configured_columns(settings).items() if c}
    wanted = ("retrieval",) if settings.relevant_id_column else None
    wanted = (settings.format,) if settings.format != "auto" else wanted
    tried = []
    for fmt, default in COLUMN_SETS:
        roles = roles_of(fmt, settings)
        if (wanted and fmt not in wanted) or set(given) - set(roles):
            continue  # a column set for a role this format doesn't read: the user means another format
        chosen = {r: given.get(r, default.get(r, "")) for r in roles}
        if all(c in columns for c in chosen.values()):
            return fmt, chosen
        tried.append((fmt, chosen))
    if wanted and tried:
        fmt, chosen = tried[0]
        missing = next(c for c in chosen.values() if c not in columns)
        role = next(r for r, c in chosen.items() if c == missing)
        hint = did_you_mean(missing, columns)
        raise DataError(f"{source}: no column '{missing}' for the {role} of {fmt} rows.{hint}"
                        f" Columns: {', '.join(columns)}. Set task.{role}_column to the right one.")
    known = "; ".join(f"{fmt}: {'/'.join(c.values())}" for fmt, c in COLUMN_SETS)
    raise DataError(f"{source}: cannot tell the embedding data's format from its columns ({', '.join(columns)}). "
                    f"Set task.format and the task's *_column settings, or name the columns as one of: {known}.")


def texts(frame: pd.DataFrame, column: str) -> list[str]:
    """The column's texts; a missing or blank cell (pandas reads them as NaN) is a DataError naming the rows."""
    return clean_text_column(frame, column, frame.attrs.get("source", "data")).tolist()


def scores(frame: pd.DataFrame, column: str, score_range: tuple[float, float]) -> list[float]:
    """The scores rescaled from ``score_range`` to [0, 1]; a missing or non-numeric score is a DataError naming the
    rows (the range itself is checked over every split at once: :func:`check_score_range`)."""
    source = frame.attrs.get("source", "data")
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    booleans = [isinstance(v, (bool, np.bool_)) for v in frame[column].tolist()]  # true is no score of 1
    bad = np.flatnonzero(~np.isfinite(values) | np.asarray(booleans, dtype=bool))
    if len(bad):
        raise DataError(f"{source}: column '{column}' has no numeric score in {_rows(frame, bad)}; fill in a score "
                        "or drop these rows.")
    low, high = score_range
    return ((values - low) / (high - low)).tolist()


def check_score_range(frames: list[pd.DataFrame], column: str, score_range: tuple[float, float]) -> None:
    """Every split's scores inside ``score_range``, checked over all the splits at once: one DataError listing the
    rows outside it, file by file in file order, and a range that holds every score (checked split by split, each
    message would show one split's rows and a range the next split breaks). Non-numeric scores are left to
    :func:`scores`."""
    low, high = score_range
    found: dict[str, list[tuple[int, float]]] = {}
    seen: list[float] = []
    for frame in frames:
        if column not in frame.columns or not len(frame):
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        seen += [float(values[finite].min()), float(values[finite].max())] if finite.any() else []
        out = np.flatnonzero(finite & ((values < low) | (values > high)))
        hits = found.setdefault(frame.attrs.get("source", "data"), [])
        hits += list(zip(row_numbers(frame, list(out)), values[out].tolist()))
    total = sum(len(hits) for hits in found.values())
    if not total:
        return
    where = "; ".join(f"{source}: {'row' if len(hits) == 1 else 'rows'} "
                      f"{', '.join(f'{r} ({v:g})' for r, v in sorted(hits)[:MAX_LISTED])}"
                      f"{f' and {len(hits) - MAX_LISTED} more' if len(hits) > MAX_LISTED else ''}"
                      for source, hits in found.items() if hits)
    raise DataError(f"column '{column}' has scores outside task.score_range [{low:g}, {high:g}] in {total} row(s): "
                    f"{where}. The scores run from {min(seen):g} to {max(seen):g}: declare their range "
                    f"(task.score_range: [{min(low, min(seen)):g}, {max(high, max(seen)):g}]) or fix these rows.")


def labels(frame: pd.DataFrame, column: str) -> list[str]:
    """The class of every row as text; a missing class is a DataError naming the rows."""
    if len(frame) == 0:
        return []
    return clean_label_column(frame, column, frame.attrs.get("source", "data"), min_classes=1).tolist()


def positive_labels(label_names: list[str], settings: EmbeddingSettings, source: str) -> set[str]:
    """The labels meaning "these texts belong together": task.positive_labels, else the known words among them."""
    if settings.positive_labels is not None:
        unknown = [p for p in settings.positive_labels if p not in label_names]
        if unknown:
            raise DataError(f"{source}: task.positive_labels names '{unknown[0]}', which no row has."
                            f"{did_you_mean(unknown[0], label_names)} Labels: {', '.join(label_names)}.")
        chosen = set(settings.positive_labels)
    else:
        chosen = {name for name in label_names if name.casefold() in POSITIVE_WORDS}
    if not chosen or chosen == set(label_names):
        raise DataError(f"{source}: cannot tell which labels mean the two texts belong together (labels: "
                        f"{', '.join(label_names)}); set task.positive_labels, e.g. [{label_names[-1]}], leaving "
                        "at least one label for unrelated pairs.")
    return chosen


def pair_split(frame: pd.DataFrame, fmt: str, cols: dict[str, str], settings: EmbeddingSettings,
               label_names: list[str]) -> EmbeddingSplit:
    """A scored-pairs, labelled-pairs or triplets split."""
    split = EmbeddingSplit(ids=row_ids(frame), first=texts(frame, cols["first"]), second=texts(frame, cols["second"]))
    if fmt == "triplets":
        split.negative = texts(frame, cols["negative"])
        _check_distinct(frame, split.second, split.negative, (cols["second"], cols["negative"]))
    elif fmt == "scored_pairs":
        split.score = scores(frame, cols["score"], settings.score_range)
    else:
        split.label = [label_names.index(v) for v in labels(frame, cols["label"])]
    return split


def _check_distinct(frame: pd.DataFrame, positive: list[str], negative: list[str], names: tuple[str, str]) -> None:
    """A triplet whose positive is its negative teaches nothing and can't be scored: DataError naming the rows."""
    same = [i for i, (p, n) in enumerate(zip(positive, negative)) if " ".join(p.split()) == " ".join(n.split())]
    if same:
        raise DataError(f"{frame.attrs.get('source', 'data')}: {_rows(frame, same)}: the positive ('{names[0]}') and "
                        f"the negative ('{names[1]}') are the same text, so the anchor can't be closer to one than "
                        "to the other; fix or drop those rows.")


def row_ids(frame: pd.DataFrame) -> list[str]:
    return [str(r) for r in row_numbers(frame, list(range(len(frame))))]


def _rows(frame: pd.DataFrame, positions: Any) -> str:
    rows = row_numbers(frame, [int(p) for p in positions])
    more = f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {', '.join(map(str, rows[:MAX_LISTED]))}{more}"


# -- retrieval --------------------------------------------------------------------------------------------------


def read_corpus(frame: pd.DataFrame, settings: EmbeddingSettings) -> tuple[list[str], list[str]]:
    """(ids, texts) of the extra corpus file; missing columns, ids or texts and repeated ids are DataErrors."""
    source = frame.attrs.get("source", "corpus")
    columns = [str(c) for c in frame.columns if c != ROW_COLUMN]
    for field, col in (("corpus_id_column", settings.corpus_id_column),
                       ("corpus_text_column", settings.corpus_text_column)):
        if col not in columns:
            raise DataError(f"{source}: no column '{col}' (task.{field}).{did_you_mean(col, columns)} Columns: "
                            f"{', '.join(columns)}.")
    ids = [normalise_label(v) for v in frame[settings.corpus_id_column].tolist()]
    missing = [i for i, v in enumerate(ids) if v is None]
    if missing:
        raise DataError(f"{source}: column '{settings.corpus_id_column}' has no document id in "
                        f"{_rows(frame, missing)}; give every document an id.")
    seen: dict[str, int] = {}
    for i, doc_id in enumerate(ids):
        if doc_id in seen:
            first, again = row_numbers(frame, [seen[doc_id], i])
            raise DataError(f"{source}: rows {first} and {again} have the same document id '{doc_id}'; ids must be "
                            "unique.")
        seen[doc_id] = i
    return [str(i) for i in ids], texts(frame, settings.corpus_text_column)


def retrieval_split(frame: pd.DataFrame, cols: dict[str, str], corpus: tuple[list[str], list[str]],
                    dedupe: bool) -> EmbeddingSplit:
    """Queries, the split's corpus (its documents + the extra corpus) and each query's relevant document ids.
    ``dedupe``: a repeated query is kept once, with every document given for it (evaluation splits)."""
    ids, queries = row_ids(frame), texts(frame, cols["first"])
    if "relevant_id" in cols:
        corpus_ids, corpus_texts = list(corpus[0]), list(corpus[1])
        relevant = _relevant_ids(frame, cols["relevant_id"], set(corpus_ids))
        text_of = dict(zip(corpus_ids, corpus_texts))
        docs = [text_of[r[0]] for r in relevant]
    else:
        docs = texts(frame, cols["second"])
        corpus_ids, corpus_texts = _corpus(corpus, docs, ids, frame.attrs.get("source", "data"))
        id_of: dict[str, str] = {}
        for doc_id, text in zip(corpus_ids, corpus_texts):
            id_of.setdefault(text, doc_id)
        relevant = [[id_of[d]] for d in docs]
    by_query: dict[str, list[str]] = {}
    first_row: dict[str, int] = {}
    for i, (q, rel) in enumerate(zip(queries, relevant)):
        first_row.setdefault(q, i)
        by_query.setdefault(q, [])
        by_query[q] += [r for r in rel if r not in by_query[q]]
    keep = list(first_row.values()) if dedupe else list(range(len(ids)))
    return EmbeddingSplit(ids=[ids[i] for i in keep], first=[queries[i] for i in keep],
                          second=[docs[i] for i in keep], corpus_ids=corpus_ids, corpus=corpus_texts,
                          relevant=[list(by_query[queries[i]]) for i in keep])


def _corpus(extra: tuple[list[str], list[str]], docs: list[str], ids: list[str], source: str) -> tuple[list, list]:
    """The extra corpus, then every document of the split not in it, named row-<its first row>."""
    corpus_ids, corpus_texts = list(extra[0]), list(extra[1])
    known, taken = set(corpus_texts), set(corpus_ids)
    for doc, row in zip(docs, ids):
        if doc in known:
            continue
        name = f"row-{row}"
        if name in taken:
            raise DataError(f"the corpus file has a document id '{name}', the name given to the document of {source} "
                            f"row {row}; rename that corpus id.")
        corpus_ids.append(name)
        corpus_texts.append(doc)
        known.add(doc)
        taken.add(name)
    return corpus_ids, corpus_texts


def _relevant_ids(frame: pd.DataFrame, column: str, corpus_ids: set[str]) -> list[list[str]]:
    """Each row's relevant corpus ids (one id, a list, or a JSON list); an id missing from the corpus or an empty
    cell is a DataError naming the row."""
    source = frame.attrs.get("source", "data")
    out = []
    for row, value in zip(row_ids(frame), frame[column].tolist()):
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                raise DataError(f"{source}: row {row}: '{column}' is not a valid JSON list of ids.") from None
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        found = [normalise_label(v) for v in values]
        if not found or any(v is None for v in found):
            raise DataError(f"{source}: row {row}: '{column}' gives no relevant document id; fill it in or drop the "
                            "row.")
        absent = [v for v in found if v not in corpus_ids]
        if absent:
            raise DataError(f"{source}: row {row}: relevant document '{absent[0]}' ('{column}') is not in the corpus "
                            "file (task.corpus); add a document with that id to the corpus or fix the id.")
        out.append([str(v) for v in found])
    return out
