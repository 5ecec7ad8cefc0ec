"""What a topic discovery leaves in its output folder, each file written atomically (temporary name, then rename):

- ``documents.jsonl``: one line per document: ``row`` (1-based row in the source), ``split`` (from a config),
  ``topic`` (-1: outlier), ``x``/``y`` (its point on the map) and ``text``;
- ``topics.html``: the map coloured by topic, each topic's terms and representative documents (self-contained);
- ``topics.json``, written last: topics (id, size, terms with weights, c-TF-IDF terms, NPMI, representative
  documents), the outlier count, the quality figures, settings, embedding, timings and provenance.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adaptlab.runs.files import check_output_folder, write_json_atomic, write_jsonl_atomic, write_text_atomic
from adaptlab.topics.pipeline import Discovery
from adaptlab.topics.quality import DEFINITION

PACKAGES = ("adaptlab", "bertopic", "umap-learn", "hdbscan", "scikit-learn", "sentence-transformers", "torch",
            "numpy")
FILES = ("topics.json", "documents.jsonl", "topics.html")


def write_outputs(found: Discovery, output: Path) -> list[Path]:
    """Write the three files into ``output`` (created if needed); topics.json last, so it marks a finished set."""
    from adaptlab.topics.page import render_page

    check_output_folder(output, "Pass --output (-o) a folder.")
    output.mkdir(parents=True, exist_ok=True)
    record = topics_record(found)
    rows = document_rows(found)
    write_jsonl_atomic(output / "documents.jsonl", rows)
    write_text_atomic(output / "topics.html", render_page(record, rows))
    write_json_atomic(output / "topics.json", record)
    return [output / name for name in FILES]


def document_rows(found: Discovery) -> list[dict[str, Any]]:
    c, fit = found.corpus, found.fit
    rows = []
    for i, text in enumerate(c.texts):
        row: dict[str, Any] = {"row": c.rows[i]}
        if c.splits is not None:
            row["split"] = c.splits[i]
        x, y = fit.coordinates[i]
        row.update(topic=int(fit.assignments[i]), x=round(float(x), 4), y=round(float(y), 4), text=text)
        rows.append(row)
    return rows


def topics_record(found: Discovery) -> dict[str, Any]:
    from adaptlab.runs.provenance import git_revision, hash_records, package_versions

    c = found.corpus
    return {
        "corpus": {"source": c.source, "split": c.split, "text_column": c.text_column, "documents": len(c),
                   "data_sha256": hash_records(c.texts)},
        "embedding": found.embedding,
        "settings": found.settings.to_dict(),
        "topic_count": len(found.topic_ids),
        "outliers": found.outliers,
        "quality": _figures(found.quality, found.settings.representation),
        "quality_ctfidf": _figures(found.quality_ctfidf, "ctfidf"),
        "quality_definition": DEFINITION,
        "topics": [_topic(found, t) for t in found.topic_ids],
        "seconds": found.seconds,
        "provenance": {"packages": package_versions(PACKAGES), "git_revision": git_revision(),
                       "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }


def _topic(found: Discovery, topic: int) -> dict[str, Any]:
    c, fit = found.corpus, found.fit
    size = int((fit.assignments == topic).sum())
    docs = []
    for i in fit.representatives.get(topic, []):
        doc: dict[str, Any] = {"row": c.rows[i], "text": c.texts[i]}
        if c.splits is not None:
            doc["split"] = c.splits[i]
        docs.append(doc)
    return {
        "id": topic,
        "size": size,
        "share": round(size / len(c), 4),
        "npmi": _round(found.quality["npmi_per_topic"].get(topic)),
        "terms": [{"term": w, "weight": s} for w, s in fit.terms[topic]],
        "ctfidf_terms": [{"term": w, "weight": s} for w, s in fit.ctfidf_terms.get(topic, [])],
        "representative_documents": docs,
    }


def _figures(quality: dict[str, Any], terms: str) -> dict[str, Any]:
    return {"npmi": _round(quality["npmi"]), "diversity": _round(quality["diversity"]), "top_k": quality["top_k"],
            "topics": quality["topics"], "terms": terms, "higher_is_better": True}


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)

