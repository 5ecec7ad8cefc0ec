"""``adaptlab topics``: find the themes of a corpus with an embedding, and score how coherent they are.

    adaptlab topics examples/rotten_tomatoes_small.yaml                     # base model, all of the ladder's data
    adaptlab topics reviews.csv --text review --reducer pca --min-topic-size 15
    adaptlab topics examples/rotten_tomatoes_small.yaml --split test --embedding runs/<ladder>/<rung>

Writes topics.json, documents.jsonl and topics.html into --output (default runs/topics/<corpus>-<embedding>) and
prints each topic with its NPMI, and the corpus-level NPMI and diversity, so two embeddings compare on one corpus.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from adaptlab.cli import app, console
from adaptlab.errors import UserError


@app.command()
def topics(
    source: Path = typer.Argument(..., help="A ladder config (YAML: its data) or a data file (CSV/TSV/JSONL/JSON/"
                                            "Parquet)."),
    text: str | None = typer.Option(None, "--text", help="Column holding the text (default: the config's "
                                                         "text_column, else 'text')."),
    embedding: Path | None = typer.Option(None, "--embedding", help="A trained embedding rung's folder "
                                                                    "(runs/<ladder>/<rung>) to embed with."),
    model: str | None = typer.Option(None, "--model", help="Base model to embed with, when no --embedding "
                                                           "(default: the config's model, else minilm)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output folder (default: "
                                                                    "runs/topics/<corpus>-<embedding>)."),
    split: str = typer.Option("all", help="With a config: all (train+validation+test), train, validation or test."),
    reducer: str = typer.Option("umap", help="umap (seeded; slower) or pca (fast)."),
    min_topic_size: int = typer.Option(10, help="Fewest documents in a topic (HDBSCAN min_cluster_size)."),
    top_terms: int = typer.Option(10, help="Terms per topic; NPMI and diversity use these top-k terms."),
    representation: str = typer.Option("keybert+mmr", help="Topic terms: keybert+mmr, keybert, mmr or ctfidf."),
    max_docs: int | None = typer.Option(None, help="Use a seeded random sample of at most this many documents."),
    seed: int | None = typer.Option(None, help="Seed (default: the config's seed, else 0)."),
    drop_missing: bool = typer.Option(False, help="Leave out rows with no text instead of stopping."),
) -> None:
    """Find topics in a corpus (embed, UMAP/PCA, HDBSCAN, c-TF-IDF + KeyBERT/MMR terms) and score their quality."""
    from adaptlab.topics.corpus import load_corpus
    from adaptlab.topics.embedders import check_run_folder
    from adaptlab.topics.settings import TopicSettings

    if embedding is not None and model is not None:
        raise UserError("--embedding and --model both name what embeds the texts; give one of them.")
    if embedding is not None:
        check_run_folder(embedding)
    settings = TopicSettings(reducer=reducer, min_topic_size=min_topic_size, top_terms=top_terms,  # type: ignore
                             representation=representation)  # type: ignore[arg-type]
    if settings.problems():
        raise UserError("; ".join(settings.problems()))
    with console.status("reading the corpus"):
        corpus = load_corpus(source, text, split=split, max_docs=max_docs, seed=seed, drop_missing=drop_missing)
    settings = replace(settings, seed=corpus.seed)
    _run(corpus, settings, embedding, model, output)


def _run(corpus, settings, embedding: Path | None, model: str | None, output: Path | None) -> None:
    from adaptlab.topics.corpus import check_size
    from adaptlab.topics.embedders import DEFAULT_MODEL, base_encoder, run_encoder
    from adaptlab.topics.outputs import write_outputs
    from adaptlab.topics.pipeline import discover

    check_size(corpus, settings.minimum_documents(), settings.min_topic_size)  # before loading any model
    with console.status("loading the embedding") as status:
        encoder = run_encoder(embedding) if embedding else base_encoder(model or corpus.model or DEFAULT_MODEL,
                                                                         corpus.max_length)
        found = discover(corpus, encoder, settings, progress=status.update)
    folder = output or Path("runs") / "topics" / f"{corpus.name}-{encoder.name}"
    paths = write_outputs(found, folder)
    _summary(found)
    console.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False, soft_wrap=True)


def _summary(found) -> None:
    from rich.table import Table

    from adaptlab.reporting.markup import fmt

    c, q, qc = found.corpus, found.quality, found.quality_ctfidf
    table = Table(title=f"{len(found.topic_ids)} topics in {len(c)} documents ({found.outliers} outliers)")
    for col, right in (("topic", True), ("size", True), ("NPMI", True), ("top terms", False)):
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    for t in found.topic_ids:
        size = int((found.fit.assignments == t).sum())
        terms = ", ".join(w for w, _ in found.fit.terms[t])
        table.add_row(str(t), str(size), fmt(q["npmi_per_topic"].get(t)), terms)
    console.print(table)
    if not found.topic_ids:
        console.print("[yellow]no topic found[/yellow]: every document is an outlier; lower --min-topic-size or add "
                      "documents.")
    seconds = found.seconds
    where = found.embedding.get("run_dir") or found.embedding.get("model")
    console.print(
        f"quality ({found.settings.representation} terms, top {q['top_k']}): NPMI [bold]{fmt(q['npmi'])}[/bold], "
        f"diversity [bold]{fmt(q['diversity'])}[/bold]; c-TF-IDF terms: NPMI {fmt(qc['npmi'])}, diversity "
        f"{fmt(qc['diversity'])} (higher is better) · embedding {where} · {seconds['total']:.1f} s (embed "
        f"{seconds['embed']:.1f} s, topics {seconds['topics']:.1f} s)", highlight=False, soft_wrap=True)
