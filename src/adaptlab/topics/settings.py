"""The settings of one topic discovery, each documented once; the command line and topics.json come from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Reducer = Literal["umap", "pca"]
Representation = Literal["keybert+mmr", "keybert", "mmr", "ctfidf"]
REDUCERS: tuple[str, ...] = ("umap", "pca")
REPRESENTATIONS: tuple[str, ...] = ("keybert+mmr", "keybert", "mmr", "ctfidf")


@dataclass(frozen=True)
class TopicSettings:
    reducer: Reducer = "umap"
    """How the embeddings are reduced before clustering and for the map: UMAP (cosine, seeded; slower, the first
    call in a process JIT-compiles for about 15 s) or PCA (linear, about a second)."""
    dimensions: int = 5
    """Dimensions the clustering sees after reduction (the map is always 2-D)."""
    neighbours: int = 15
    """UMAP's n_neighbors: larger values see broader structure."""
    min_topic_size: int = 10
    """HDBSCAN's min_cluster_size: the fewest documents a topic may have. Fewer topics as it grows."""
    top_terms: int = 10
    """Terms kept per topic; coherence and diversity are computed on these top-k terms."""
    representation: Representation = "keybert+mmr"
    """How topics are described: c-TF-IDF terms (``ctfidf``), then re-ranked by similarity to the topic's documents
    in embedding space (``keybert``, BERTopic's KeyBERTInspired) and/or diversified with maximal marginal relevance
    (``mmr``). The c-TF-IDF terms are always kept in topics.json too."""
    mmr_diversity: float = 0.1
    """Maximal marginal relevance: 0 keeps the most relevant terms, 1 the most diverse."""
    representative_docs: int = 3
    """Documents shown per topic: those nearest the topic's mean embedding (cosine)."""
    seed: int = 0
    """Seeds UMAP, PCA, KeyBERTInspired and the --max-docs sample."""

    def problems(self) -> list[str]:
        """What is wrong with these settings, each naming its option (empty when they are usable)."""
        out = []
        if self.reducer not in REDUCERS:
            out.append(f"--reducer '{self.reducer}': choose one of {', '.join(REDUCERS)}.")
        if self.representation not in REPRESENTATIONS:
            out.append(f"--representation '{self.representation}': choose one of {', '.join(REPRESENTATIONS)}.")
        if self.min_topic_size < 2:
            out.append(f"--min-topic-size {self.min_topic_size}: a topic needs at least 2 documents.")
        if self.top_terms < 2:
            out.append(f"--top-terms {self.top_terms}: coherence needs at least 2 terms per topic.")
        if self.dimensions < 2:
            out.append(f"dimensions {self.dimensions}: reduce to at least 2 dimensions.")
        return out

    def minimum_documents(self) -> int:
        """The fewest documents worth clustering: room for two topics of the smallest size."""
        return 2 * self.min_topic_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
