"""Prediction records: what a rung's embeddings say about each example of a split, one JSON object per example.

Every record has ``id`` (the source row) and ``reference`` / ``prediction``; per format:

- scored_pairs: ``first``, ``second``, ``reference`` (the gold score rescaled to [0, 1]), ``prediction`` (cosine).
- labelled_pairs: ``first``, ``second``, ``reference`` (the label), ``positive`` (whether the label is one of
  task.positive_labels), ``prediction`` (cosine).
- triplets: ``first`` (anchor), ``second`` (positive), ``negative``, ``cosine_positive``, ``cosine_negative``,
  ``reference`` ("positive"), ``prediction`` (whichever text is closer to the anchor; a tie is "negative") and
  ``metrics`` ({"triplet_accuracy": 1.0 or 0.0}).
- retrieval: ``query``, ``reference`` (its relevant corpus ids), ``relevant_texts``, ``relevant_ranks`` (the
  1-based ranks of its relevant documents among the whole corpus, best first), ``prediction`` (the ids of the top
  10 documents), ``top_scores`` and ``top_texts`` (theirs), ``corpus_size`` and ``metrics`` (recall/MRR/nDCG at
  each k).

Documents scored the same as a relevant one are ranked above it: a collapsed model, which ties everything, ranks
the relevant documents last instead of wherever corpus order happens to put them.

``encode`` is a rung's ``encode(texts)`` (dense, L2-normalised rows) or any function of texts to a dense or
SciPy sparse matrix (the TF-IDF baseline); rows are L2-normalised here again, so a cosine is a dot product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from adaptlab.errors import UserError
from adaptlab.tasks.embedding.data import EmbeddingSplit
from adaptlab.tasks.embedding.metrics import ranking_values

TOP_HITS = 10
_BLOCK_CELLS = 1 << 22  # query x document scores held at once (16 MB of float32)

Encode = Callable[[list[str]], Any]


def embed(encode: Encode, texts: list[str]) -> Any:
    """One L2-normalised row per text (each distinct text encoded once)."""
    from scipy.sparse import issparse
    from sklearn.preprocessing import normalize

    unique = list(dict.fromkeys(texts))
    vectors = encode(unique) if unique else np.zeros((0, 1), dtype=np.float32)
    if not issparse(vectors):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(unique):
            raise UserError(f"the rung's encode returned an array of shape {vectors.shape} for {len(unique)} texts; "
                            "an embedding rung returns one row per text.")
        if not np.isfinite(vectors).all():
            raise UserError("the rung's embeddings hold NaN or infinite values (training diverged?); lower the "
                            "learning rate or check the rung.")
    index = {t: i for i, t in enumerate(unique)}
    return normalize(vectors)[[index[t] for t in texts]]


def row_cosines(a: Any, b: Any) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b`` (normalised rows, dense or sparse)."""
    from scipy.sparse import issparse

    if issparse(a):
        return np.asarray(a.multiply(b).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def build(split: EmbeddingSplit, fmt: str, encode: Encode, *, label_names: list[str], positive: set[str],
          k: list[int]) -> list[dict]:
    """The records of every example of ``split``."""
    if fmt == "retrieval":
        return retrieval_records(split, encode, k)
    n = len(split)
    vectors = embed(encode, split.first + split.second + (split.negative or []))
    a, b = vectors[:n], vectors[n:2 * n]
    cos = row_cosines(a, b)
    if fmt == "triplets":
        return triplet_records(split, cos, row_cosines(a, vectors[2 * n:]))
    records = []
    for i in range(n):
        record = {"id": split.ids[i], "first": split.first[i], "second": split.second[i]}
        if fmt == "scored_pairs":
            record["reference"] = round(float(split.score[i]), 6)
        else:
            label = label_names[split.label[i]]
            record.update(reference=label, positive=label in positive)
        records.append({**record, "prediction": round(float(cos[i]), 6)})
    return records


def triplet_records(split: EmbeddingSplit, cos_pos: np.ndarray, cos_neg: np.ndarray) -> list[dict]:
    records = []
    for i in range(len(split)):
        right = bool(cos_pos[i] > cos_neg[i])
        records.append({
            "id": split.ids[i], "first": split.first[i], "second": split.second[i], "negative": split.negative[i],
            "cosine_positive": round(float(cos_pos[i]), 6), "cosine_negative": round(float(cos_neg[i]), 6),
            "reference": "positive", "prediction": "positive" if right else "negative",
            "metrics": {"triplet_accuracy": float(right)},
        })
    return records


def retrieval_records(split: EmbeddingSplit, encode: Encode, k: list[int]) -> list[dict]:
    """Each query ranked against the split's whole corpus, in blocks of queries."""
    n = len(split)
    vectors = embed(encode, split.first + split.corpus)
    queries, corpus = vectors[:n], vectors[n:]
    position = {doc_id: j for j, doc_id in enumerate(split.corpus_ids)}
    text_of = dict(zip(split.corpus_ids, split.corpus))
    block = max(1, _BLOCK_CELLS // max(1, len(split.corpus)))
    records = []
    for start in range(0, n, block):
        scores = _dense(queries[start:start + block] @ corpus.T)
        relevant = np.zeros(scores.shape, dtype=bool)
        for row in range(len(scores)):
            relevant[row, [position[d] for d in split.relevant[start + row]]] = True
        order = np.lexsort((relevant, -scores), axis=1)  # best first; a tie goes against the relevant documents
        found = np.take_along_axis(relevant, order, axis=1)
        for row in range(len(scores)):
            records.append(_query_record(split, start + row, scores[row], order[row], found[row], k, text_of))
    return records


def _query_record(split: EmbeddingSplit, i: int, scores: np.ndarray, order: np.ndarray, found: np.ndarray,
                  k: list[int], text_of: dict[str, str]) -> dict:
    """Query ``i``'s record from its scores against the corpus, their order (best first) and where in that order
    its relevant documents are (``found``)."""
    top = order[:TOP_HITS]
    ranks = [int(r) for r in np.flatnonzero(found) + 1]
    return {
        "id": split.ids[i], "query": split.first[i], "reference": list(split.relevant[i]),
        "relevant_texts": [text_of[d] for d in split.relevant[i]], "relevant_ranks": ranks,
        "prediction": [split.corpus_ids[j] for j in top], "top_scores": [round(float(scores[j]), 6) for j in top],
        "top_texts": [split.corpus[j] for j in top], "corpus_size": len(split.corpus),
        "metrics": ranking_values(ranks, k),
    }


def _dense(matrix: Any) -> np.ndarray:
    from scipy.sparse import issparse

    return np.asarray(matrix.toarray() if issparse(matrix) else matrix, dtype=np.float32)
