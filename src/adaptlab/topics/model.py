"""Reduce, cluster, describe: BERTopic over precomputed embeddings, with the reducer and clusterer chosen here.

- reduce: UMAP (cosine, seeded) or PCA to ``settings.dimensions``;
- cluster: HDBSCAN (``min_cluster_size = settings.min_topic_size``); documents in no cluster are outliers (-1);
- describe: c-TF-IDF over English words (stop words removed), then, as ``settings.representation`` asks,
  KeyBERTInspired (terms re-ranked by similarity to the topic's documents, with the same embedding) and/or maximal
  marginal relevance. The plain c-TF-IDF terms are kept as a second aspect.

The 2-D map is a separate reduction of the embeddings with the same method, so it shows the embedding, not the
clusters. Representative documents are those nearest the topic's mean embedding (cosine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptlab.errors import DataError
from adaptlab.topics.settings import TopicSettings

CTFIDF = "c-TF-IDF"
Terms = dict[int, list[tuple[str, float]]]


@dataclass
class TopicFit:
    assignments: np.ndarray
    """Each document's topic id; -1 marks an outlier."""
    terms: Terms
    """Each topic's top terms with their weights, in the chosen representation."""
    ctfidf_terms: Terms
    coordinates: np.ndarray
    """Each document's point on the 2-D map."""
    representatives: dict[int, list[int]]
    """Each topic's most central documents (indices)."""
    analyzer: Callable[[str], list[str]]
    """How a text is split into the terms above (the c-TF-IDF vectorizer's analyzer)."""


def fit_topics(texts: list[str], embeddings: np.ndarray, encode: Callable[[list[str]], np.ndarray],
               settings: TopicSettings) -> TopicFit:
    """Topics of ``texts`` from their ``embeddings``; ``encode`` embeds the candidate terms (KeyBERT, MMR)."""
    from bertopic import BERTopic
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(stop_words="english")
    model = BERTopic(
        embedding_model=_backend(encode), umap_model=reducer(settings, len(texts), settings.dimensions),
        hdbscan_model=_clusterer(settings), vectorizer_model=vectorizer,
        representation_model=_representation(settings), top_n_words=settings.top_terms,
        calculate_probabilities=False,
    )
    try:
        assignments, _ = model.fit_transform(texts, embeddings)
    except ValueError as err:
        if "empty vocabulary" in str(err):
            raise DataError("the texts hold no words to describe topics with (only English stop words, numbers or "
                            "single letters); topics need ordinary text.") from None
        raise
    assignments = np.asarray(assignments, dtype=int)
    topic_ids = sorted(int(t) for t in set(assignments.tolist()) if t != -1)
    aspects = model.topic_aspects_.get(CTFIDF, {})
    return TopicFit(
        assignments=assignments,
        terms={t: _clean(model.get_topic(t) or [])[: settings.top_terms] for t in topic_ids},
        ctfidf_terms={t: _clean(aspects.get(t, []))[: settings.top_terms] for t in topic_ids},
        coordinates=map_coordinates(embeddings, settings),
        representatives=representatives(embeddings, assignments, settings.representative_docs),
        analyzer=vectorizer.build_analyzer(),
    )


def reducer(settings: TopicSettings, n: int, dimensions: int) -> Any:
    """UMAP or PCA to ``dimensions``, seeded, sized for ``n`` documents."""
    if settings.reducer == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=min(dimensions, n), random_state=settings.seed)
    from umap import UMAP

    return UMAP(n_neighbors=max(2, min(settings.neighbours, n - 1)), n_components=dimensions,
                min_dist=0.0 if dimensions > 2 else 0.1, metric="cosine", random_state=settings.seed, n_jobs=1)


def map_coordinates(embeddings: np.ndarray, settings: TopicSettings) -> np.ndarray:
    """Each document as a point in 2-D, by the settings' reducer."""
    if len(embeddings) < 3:
        return np.zeros((len(embeddings), 2), dtype=np.float32)
    return np.asarray(reducer(settings, len(embeddings), 2).fit_transform(embeddings), dtype=np.float32)


def representatives(embeddings: np.ndarray, assignments: np.ndarray, k: int) -> dict[int, list[int]]:
    """For each topic, the ``k`` documents nearest its mean embedding (cosine), most central first."""
    out: dict[int, list[int]] = {}
    for topic in sorted(set(assignments.tolist()) - {-1}):
        members = np.flatnonzero(assignments == topic)
        centre = embeddings[members].mean(axis=0)
        centre = centre / (np.linalg.norm(centre) or 1.0)
        order = np.argsort(-(embeddings[members] @ centre), kind="stable")
        out[int(topic)] = [int(members[i]) for i in order[:k]]
    return out


def _clusterer(settings: TopicSettings) -> Any:
    from hdbscan import HDBSCAN

    return HDBSCAN(min_cluster_size=settings.min_topic_size, metric="euclidean", cluster_selection_method="eom",
                   prediction_data=True)


def _representation(settings: TopicSettings) -> dict[str, list[Any]]:
    """BERTopic's representation models: the main one as configured, plus plain c-TF-IDF as an aspect."""
    from bertopic.representation import KeyBERTInspired, MaximalMarginalRelevance

    k = settings.top_terms
    main: list[Any] = []
    if "keybert" in settings.representation:  # with MMR after it, KeyBERT passes on more candidates to choose from
        pool = max(3 * k, 30) if "mmr" in settings.representation else k
        main.append(KeyBERTInspired(top_n_words=pool, random_state=settings.seed))
    if "mmr" in settings.representation:
        main.append(MaximalMarginalRelevance(diversity=settings.mmr_diversity, top_n_words=k))
    return {"Main": main, CTFIDF: []}


def _backend(encode: Callable[[list[str]], np.ndarray]) -> Any:
    """``encode`` as a BERTopic embedding backend (it embeds the candidate terms for KeyBERT and MMR)."""
    from bertopic.backend import BaseEmbedder

    class Backend(BaseEmbedder):
        def embed(self, documents: list[str], verbose: bool = False) -> np.ndarray:
            return encode(list(documents))

    return Backend()


def _clean(terms: Any) -> list[tuple[str, float]]:
    """(term, weight) pairs without BERTopic's empty padding."""
    return [(str(w), round(float(s), 6)) for w, s in terms if str(w).strip()]
