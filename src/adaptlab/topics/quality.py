"""How good are the topics? Coherence (NPMI) and diversity of their top terms, measured on the corpus itself.

- NPMI coherence of a topic: the mean, over every pair (a, b) of its top-k terms, of
  ``log(p(a, b) / (p(a) p(b))) / -log p(a, b)``, with p the share of documents containing the term(s). It runs from
  -1 (the two terms never share a document) through 0 (independent) to 1 (they only occur together). The
  corpus-level figure is the mean over topics (outliers excluded).
- Topic diversity: the share of unique terms among all topics' top-k terms (1: no two topics share a term).

Both use the topics' own analyzer (how c-TF-IDF split the text), so they compare embeddings fairly on one corpus:
same documents, same terms vocabulary, different clusters. Higher is better for both.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

NEVER_TOGETHER = -1.0
DEFINITION = ("NPMI: mean over pairs of a topic's top-k terms of log(p(a,b)/(p(a)p(b)))/-log p(a,b), p = share of "
              "documents containing the term(s); -1 when a pair never shares a document; mean over topics. "
              "Diversity: unique terms / all top-k terms over topics. Higher is better for both.")


def default_analyzer() -> Callable[[str], list[str]]:
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(stop_words="english").build_analyzer()


def npmi_by_topic(texts: Sequence[str], topic_terms: Mapping[int, Sequence[str]],
                  analyzer: Callable[[str], list[str]] | None = None) -> dict[int, float | None]:
    """Each topic's NPMI coherence on ``texts`` (None for a topic with fewer than two terms)."""
    from sklearn.feature_extraction.text import CountVectorizer

    vocab = sorted({t for terms in topic_terms.values() for t in terms})
    if not vocab or not len(texts):
        return {t: None for t in topic_terms}
    counts = CountVectorizer(vocabulary=vocab, binary=True, analyzer=analyzer or default_analyzer())
    x = counts.transform(list(texts)).astype(np.float64)
    together = (x.T @ x).toarray()  # documents holding both terms; the diagonal: documents holding each
    index = {w: i for i, w in enumerate(vocab)}
    n = x.shape[0]
    out: dict[int, float | None] = {}
    for topic, terms in topic_terms.items():
        ids = [index[w] for w in dict.fromkeys(terms)]
        scores = [_npmi(together[a, b], together[a, a], together[b, b], n) for a, b in itertools.combinations(ids, 2)]
        out[topic] = float(np.mean(scores)) if scores else None
    return out


def _npmi(both: float, a: float, b: float, n: int) -> float:
    if both <= 0:
        return NEVER_TOGETHER
    p_ab, p_a, p_b = both / n, a / n, b / n
    if p_ab >= 1.0:  # both terms in every document: they only ever occur together
        return 1.0
    return math.log(p_ab / (p_a * p_b)) / -math.log(p_ab)


def topic_diversity(topic_terms: Mapping[int, Sequence[str]]) -> float | None:
    """Unique terms / all terms over the topics' top-k lists (None without terms)."""
    every = [t for terms in topic_terms.values() for t in terms]
    return len(set(every)) / len(every) if every else None


def summarise(texts: Sequence[str], topic_terms: Mapping[int, Sequence[str]],
              analyzer: Callable[[str], list[str]] | None = None) -> dict[str, Any]:
    """The quality figures of one set of topics: corpus-level NPMI and diversity, and NPMI per topic."""
    terms = {t: list(v) for t, v in topic_terms.items() if t != -1}
    per_topic = npmi_by_topic(texts, terms, analyzer)
    scored = [v for v in per_topic.values() if v is not None]
    return {
        "npmi": float(np.mean(scored)) if scored else None,
        "diversity": topic_diversity(terms),
        "topics": len(terms),
        "top_k": max((len(v) for v in terms.values()), default=0),
        "npmi_per_topic": per_topic,
    }


def class_terms(texts: Sequence[str], labels: Sequence[int], k: int = 10,
                analyzer: Callable[[str], list[str]] | None = None) -> dict[int, list[str]]:
    """The top-k c-TF-IDF terms of any assignment of documents to topics (outliers, -1, left out): a baseline to
    score against, e.g. a random assignment, which should be less coherent than the discovered topics."""
    from bertopic.vectorizers import ClassTfidfTransformer
    from sklearn.feature_extraction.text import CountVectorizer

    labels = np.asarray(labels)
    topics = sorted(set(labels.tolist()) - {-1})
    joined = [" ".join(t for t, lab in zip(texts, labels) if lab == topic) for topic in topics]
    counts = CountVectorizer(analyzer=analyzer or default_analyzer())
    x = counts.fit_transform(joined)
    weights = ClassTfidfTransformer().fit_transform(x).toarray()
    words = counts.get_feature_names_out()
    return {int(topic): [str(words[i]) for i in np.argsort(-row, kind="stable")[:k] if row[i] > 0]
            for topic, row in zip(topics, weights)}
