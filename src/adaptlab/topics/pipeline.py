"""One topic discovery, step by step: check the corpus, embed, find and describe topics, score them.

    from adaptlab.topics.corpus import load_corpus
    from adaptlab.topics.embedders import base_encoder
    from adaptlab.topics.pipeline import discover
    found = discover(load_corpus(Path("reviews.csv"), "text"), base_encoder("minilm"), TopicSettings(reducer="pca"))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from adaptlab.topics.corpus import Corpus, check_size
from adaptlab.topics.embedders import TextEncoder
from adaptlab.topics.model import TopicFit, fit_topics
from adaptlab.topics.quality import summarise
from adaptlab.topics.settings import TopicSettings


@dataclass
class Discovery:
    corpus: Corpus
    embedding: dict
    settings: TopicSettings
    fit: TopicFit
    quality: dict
    """NPMI and diversity of the topics' terms as shown (the chosen representation)."""
    quality_ctfidf: dict
    """The same figures for the plain c-TF-IDF terms."""
    seconds: dict[str, float]

    @property
    def topic_ids(self) -> list[int]:
        return sorted(self.fit.terms)

    @property
    def outliers(self) -> int:
        return int((self.fit.assignments == -1).sum())


def discover(corpus: Corpus, encoder: TextEncoder, settings: TopicSettings,
             progress: Callable[[str], None] | None = None) -> Discovery:
    """Topics of ``corpus`` in ``encoder``'s embedding space, with their quality figures and timings."""
    say = progress or (lambda _: None)
    check_size(corpus, settings.minimum_documents(), settings.min_topic_size)
    start = time.perf_counter()
    say(f"embedding {len(corpus)} documents with {encoder.name}")
    embeddings = encoder(corpus.texts)
    embedded = time.perf_counter()
    say(f"reducing ({settings.reducer}), clustering (HDBSCAN) and describing topics ({settings.representation})")
    fit = fit_topics(corpus.texts, embeddings, encoder, settings)
    fitted = time.perf_counter()
    say("scoring topic coherence (NPMI) and diversity")
    quality = summarise(corpus.texts, {t: [w for w, _ in v] for t, v in fit.terms.items()}, fit.analyzer)
    quality_ctfidf = summarise(corpus.texts, {t: [w for w, _ in v] for t, v in fit.ctfidf_terms.items()},
                               fit.analyzer)
    scored = time.perf_counter()
    seconds = {"embed": embedded - start, "topics": fitted - embedded, "quality": scored - fitted,
               "total": scored - start}
    return Discovery(corpus=corpus, embedding=dict(encoder.info), settings=settings, fit=fit, quality=quality,
                     quality_ctfidf=quality_ctfidf, seconds={k: round(v, 2) for k, v in seconds.items()})
