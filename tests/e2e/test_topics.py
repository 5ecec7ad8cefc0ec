"""``adaptlab topics`` on a synthetic corpus of three themes, each written with its own ten words.

The real MiniLM base model embeds it (a tiny random BERT would embed meaningless vectors); the trained-rung path
(``--embedding``) is exercised with a fake rung whose ``encode`` hashes words into a bag-of-words vector, so it
needs no training. PCA keeps the runs fast; one test runs UMAP. The page is opened in headless Chromium (skipped
without a browser, like tests/e2e/test_report_browser.py).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from adaptlab.cli import main
from adaptlab.tasks import get_task

THEMES = {
    "cooking": "pasta sauce garlic oven recipe flour bake kitchen tomato cheese".split(),
    "space": "rocket orbit planet astronaut telescope galaxy moon launch satellite star".split(),
    "football": "goal striker referee stadium penalty league coach match keeper midfield".split(),
}
PER_THEME = 40
HOSTILE = ' <script>alert("x")</script> & <b>bold</b>'


def theme_rows(per_theme: int = PER_THEME, seed: int = 0) -> list[dict]:
    """Documents of four words from one theme's vocabulary; the first one also carries markup to escape."""
    rng = random.Random(seed)
    rows = []
    for _ in range(per_theme):
        for theme, words in THEMES.items():
            text = "the " + " and the ".join(rng.sample(words, 4))
            rows.append({"id": len(rows), "body": text + (HOSTILE if not rows else ""), "theme": theme})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def invoke(*args: object) -> tuple[int, str, str]:
    """Run the CLI in this process (imports and the model load are paid once per test run)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["adaptlab", *map(str, args)])
        mp.setenv("COLUMNS", "250")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code or 0
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def corpus_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("corpus") / "themes.csv", theme_rows())


@pytest.fixture(scope="module")
def found(corpus_csv, session_home) -> tuple[int, str, str, Path]:
    """One discovery with MiniLM and PCA, shared by the tests that read its outputs."""
    folder = corpus_csv.parent / "topics"
    code, out, err = invoke("topics", corpus_csv, "--text", "body", "--reducer", "pca", "--output", folder)
    return code, out, err, folder


def theme_of(terms: list[str]) -> tuple[str, int]:
    """The theme most of ``terms`` come from, and how many do."""
    return max(((t, sum(w in words for w in terms)) for t, words in THEMES.items()), key=lambda x: x[1])


# ------------------------------------------------------------------------------------------ what it finds


def test_finds_the_themes_and_writes_the_files(found):
    code, out, err, folder = found
    assert code == 0, err
    record = json.loads((folder / "topics.json").read_text(encoding="utf-8"))
    assert record["topic_count"] == len(record["topics"]) >= 2
    themes = []
    for topic in record["topics"]:
        terms = [t["term"] for t in topic["terms"]]
        assert len(terms) == 10 and all(isinstance(t["weight"], float) for t in topic["terms"])
        theme, hits = theme_of(terms)
        assert hits >= 8 and theme_of(terms[:5])[1] == 5, (theme, terms)  # the top terms are one theme's words
        themes.append(theme)
        assert len(topic["representative_documents"]) == 3
        assert all(theme_of(d["text"].split())[0] == theme for d in topic["representative_documents"])
    assert len(set(themes)) == len(themes)  # each topic a different theme
    assert sum(t["size"] for t in record["topics"]) + record["outliers"] == 3 * PER_THEME
    assert record["corpus"]["documents"] == 3 * PER_THEME and record["embedding"]["model"] == "minilm"

    docs = [json.loads(line) for line in (folder / "documents.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [d["row"] for d in docs] == list(range(1, 3 * PER_THEME + 1))
    truth = {r["id"] + 1: r["theme"] for r in theme_rows()}  # row numbers are 1-based
    ids = {t["id"]: theme for t, theme in zip(record["topics"], themes)}
    placed = [d for d in docs if d["topic"] != -1]
    assert {d["topic"] for d in placed} == set(ids)
    assert sum(ids[d["topic"]] == truth[d["row"]] for d in placed) >= 0.95 * len(placed)  # topics are pure
    assert all(math.isfinite(d["x"]) and math.isfinite(d["y"]) for d in docs)


def test_quality_figures_are_in_range_and_printed(found):
    code, out, _, folder = found
    record = json.loads((folder / "topics.json").read_text(encoding="utf-8"))
    q = record["quality"]
    assert 0 < q["npmi"] <= 1 and q["top_k"] == 10  # theme words co-occur more often than chance
    assert all(-1 <= t["npmi"] <= 1 for t in record["topics"])
    assert q["diversity"] == 1.0  # the themes share no word
    printed = re.search(r"NPMI (-?[0-9.]+), diversity ([0-9.]+);", out)
    assert printed, out
    assert float(printed[1]) == pytest.approx(q["npmi"], abs=1e-3)
    assert float(printed[2]) == pytest.approx(q["diversity"], abs=1e-3)
    assert "top terms" in out and "wrote" in out


def test_npmi_pinned_values():
    from adaptlab.topics.quality import npmi_by_topic, topic_diversity

    texts = ["apple banana", "apple banana", "cherry grape", "cherry grape"]
    scores = npmi_by_topic(texts, {0: ["apple", "banana"], 1: ["apple", "cherry"], 2: ["apple"]})
    assert scores[0] == pytest.approx(1.0)  # always together
    assert scores[1] == pytest.approx(-1.0)  # never together
    assert scores[2] is None  # one term: no pair
    # independent terms score 0: a in half the documents, b in half, together in a quarter
    assert npmi_by_topic(["a1 b1", "a1 c1", "d1 b1", "d1 c1"], {0: ["a1", "b1"]})[0] == pytest.approx(0.0)
    assert topic_diversity({0: ["a", "b"], 1: ["a", "c"]}) == pytest.approx(0.75)
    assert topic_diversity({0: ["a", "b"], 1: ["a", "b"]}) == pytest.approx(0.5)


def test_degenerate_topics_score_lower(found):
    """The metrics can fail: a shuffled assignment, or terms mixed across topics, is less coherent."""
    from adaptlab.topics.quality import class_terms, summarise

    _, _, _, folder = found
    record = json.loads((folder / "topics.json").read_text(encoding="utf-8"))
    texts = [r["body"] for r in theme_rows()]
    found_terms = {t["id"]: [x["term"] for x in t["terms"]] for t in record["topics"]}
    good = summarise(texts, found_terms)
    assert good["npmi"] == pytest.approx(record["quality"]["npmi"], abs=1e-3)

    labels = np.random.default_rng(0).permutation([i % len(found_terms) for i in range(len(texts))])
    shuffled = summarise(texts, class_terms(texts, labels, k=10))
    assert shuffled["npmi"] < good["npmi"] - 0.2, (shuffled, good)

    lists = list(found_terms.values())
    mixed = {i: [lists[(i + j) % len(lists)][j] for j in range(10)] for i in range(len(lists))}
    assert summarise(texts, mixed)["npmi"] < good["npmi"] - 0.5
    assert summarise(texts, {0: lists[0], 1: lists[0]})["diversity"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ a trained rung


class HashingEncoder:
    """A stand-in for an embedding rung: bag of words hashed into 512 dimensions, L2-normalised."""

    label_names: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 512), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, zlib.crc32(word.encode()) % 512] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"rung": {"name": "contrastive", "method": "fake_embedding"},
                                                 "context": {"model_spec": "minilm", "max_length": 32}}))
    return folder


def test_embedding_run_on_a_config_corpus(tmp_path, corpus_csv, monkeypatch):
    """--embedding loads the rung with pipeline.load_run and embeds with method.encode; a config gives its splits."""
    run_dir = fake_run(tmp_path / "runs" / "themes" / "contrastive")
    loaded = []

    def load_run(path):
        loaded.append(Path(path))
        return get_task("embedding"), HashingEncoder(), json.loads((Path(path) / "run.json").read_text())

    monkeypatch.setattr("adaptlab.pipeline.load_run", load_run)
    config = tmp_path / "themes.yaml"
    config.write_text(yaml.safe_dump({
        "name": "themes", "task": {"type": "classification"}, "model": "minilm", "seed": 0,
        "data": {"path": str(corpus_csv), "text_column": "body", "label_column": "theme", "test_size": 0.5,
                 "validation_size": 0.0},
        "rungs": [{"method": "linear_probe"}]}))
    out = tmp_path / "out"
    code, text, err = invoke("topics", config, "--split", "test", "--embedding", run_dir, "--reducer", "pca",
                             "--representation", "ctfidf", "-o", out)
    assert code == 0, err
    assert loaded == [run_dir]
    record = json.loads((out / "topics.json").read_text())
    assert record["embedding"]["kind"] == "rung" and record["embedding"]["rung"] == "contrastive"
    assert record["corpus"]["split"] == "test" and record["corpus"]["documents"] == 60
    docs = [json.loads(line) for line in (out / "documents.jsonl").read_text().splitlines()]
    assert len(docs) == 60 and {d["split"] for d in docs} == {"test"}
    assert record["topic_count"] >= 2
    for topic in record["topics"]:
        assert theme_of([t["term"] for t in topic["terms"]])[1] >= 8


def test_a_real_embedding_rung_embeds_like_its_base(tmp_path, corpus_csv, found):
    """The real interface: an embedding_base rung (the untrained floor of the embedding ladder) loaded with
    pipeline.load_run gives the same topics as --model with its base model (same maximum length)."""
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    rows = theme_rows()
    pairs = [{"query": a["body"], "document": b["body"]} for a, b in zip(rows, rows[3:] + rows[:3])]  # same theme
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    (tmp_path / "ladder.yaml").write_text(yaml.safe_dump({
        "name": "themes_embed", "task": {"type": "embedding"}, "model": "minilm", "seed": 0,
        "data": {"path": "pairs.jsonl", "test_size": 0.25, "validation_size": 0.0, "max_length": 128},
        "output_dir": str(tmp_path / "ladder"), "rungs": [{"method": "embedding_base", "name": "base"}]}))
    board = compare(prepare(load_ladder(tmp_path / "ladder.yaml")))
    assert [e["status"] for e in board["rungs"]] == ["ok"], board
    code, _, err = invoke("topics", corpus_csv, "--text", "body", "--reducer", "pca", "--embedding",
                          tmp_path / "ladder" / "base", "-o", tmp_path / "topics")
    assert code == 0, err
    record = json.loads((tmp_path / "topics" / "topics.json").read_text())
    assert record["embedding"]["method"] == "embedding_base" and record["embedding"]["model"] == "minilm"
    base = found[3]
    assert (tmp_path / "topics" / "documents.jsonl").read_text() == (base / "documents.jsonl").read_text()
    assert record["quality"] == json.loads((base / "topics.json").read_text())["quality"]


def test_umap_reducer_separates_the_themes():
    """The default reducer (UMAP, seeded) through the library API; the one slow-ish test (numba compiles)."""
    from adaptlab.topics.corpus import Corpus
    from adaptlab.topics.embedders import TextEncoder
    from adaptlab.topics.pipeline import discover
    from adaptlab.topics.settings import TopicSettings

    rows = theme_rows()
    corpus = Corpus(texts=[r["body"] for r in rows], rows=[r["id"] + 1 for r in rows], splits=None,
                    source="memory", name="themes", text_column="body")
    encoder = TextEncoder(name="hashing", encode=HashingEncoder().encode)
    result = discover(corpus, encoder, TopicSettings(reducer="umap", representation="ctfidf"))
    assert len(result.topic_ids) >= 2
    for t in result.topic_ids:
        assert theme_of([w for w, _ in result.fit.terms[t]])[1] >= 8
    assert result.fit.coordinates.shape == (len(rows), 2)
    assert result.quality["npmi"] > 0


# ------------------------------------------------------------------------------------------ user mistakes


@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, Path]:
    rows = theme_rows(per_theme=10)
    missing = [dict(r) for r in rows]
    missing[3]["body"] = ""  # rows 4 and 8: an empty cell
    missing[7]["body"] = "   "
    jsonl = tmp_path / "nulls.jsonl"
    jsonl.write_text("".join(json.dumps({"body": r["body"] if i not in (1, 5) else None}) + "\n"
                             for i, r in enumerate(rows)))
    return {"csv": write_csv(tmp_path / "themes.csv", rows), "missing": write_csv(tmp_path / "gaps.csv", missing),
            "jsonl": jsonl, "small": write_csv(tmp_path / "small.csv", rows[:12]),
            "notrun": tmp_path / "notrun"}


@pytest.mark.parametrize("case, args, expected", [
    ("no column", ["{csv}", "--text", "review"], ["no text column 'review'", "'id', 'body', 'theme'", "--text"]),
    ("close column", ["{csv}", "--text", "bdy"], ["Did you mean 'body'?"]),
    ("empty cells", ["{missing}", "--text", "body"], ["2 row(s) have no text", "row(s) 4, 8", "--drop-missing"]),
    ("nulls", ["{jsonl}", "--text", "body"], ["2 row(s) have no text", "row(s) 2, 6"]),
    ("too small", ["{small}", "--text", "body"], ["12 document(s) are too few", "at least 20",
                                                  "--min-topic-size"]),
    ("too small after drops", ["{missing}", "--text", "body", "--drop-missing", "--min-topic-size", "15"],
     ["28 document(s) are too few", "at least 30"]),
    ("unknown run", ["{csv}", "--text", "body", "--embedding", "{notrun}"],
     ["no such folder", "runs/<ladder>/<rung>"]),
    ("not a run", ["{csv}", "--text", "body", "--embedding", "{csv_dir}"], ["not a run folder (no run.json)"]),
    ("both embedders", ["{csv}", "--embedding", "{csv_dir}", "--model", "minilm"], ["give one of them"]),
    ("bad reducer", ["{csv}", "--reducer", "tsne"], ["--reducer 'tsne'", "umap, pca"]),
    ("tiny topics", ["{csv}", "--min-topic-size", "1"], ["at least 2 documents"]),
    ("split of a file", ["{csv}", "--split", "test"], ["needs a ladder config"]),
])
def test_bad_input_exits_2_with_a_message(bad_inputs, case, args, expected):
    paths = {k: str(v) for k, v in bad_inputs.items()} | {"csv_dir": str(bad_inputs["csv"].parent)}
    code, out, err = invoke("topics", *[a.format(**paths) for a in args])
    assert code == 2, (case, out, err)
    message = " ".join(err.split())
    for part in expected:
        assert part in message, (case, message)
    assert "Traceback" not in err + out


def test_dropping_missing_text_never_embeds_nan(bad_inputs, tmp_path, monkeypatch):
    seen: list[str] = []

    class Recording(HashingEncoder):
        def encode(self, texts):
            seen.extend(texts)
            return super().encode(texts)

    monkeypatch.setattr("adaptlab.pipeline.load_run", lambda path: (get_task("embedding"), Recording(), {"rung": {}}))
    run_dir = fake_run(tmp_path / "run")
    code, _, err = invoke("topics", bad_inputs["jsonl"], "--text", "body", "--drop-missing", "--embedding", run_dir,
                          "--reducer", "pca", "--min-topic-size", "5", "--representation", "ctfidf", "-o",
                          tmp_path / "out")
    assert code == 0, err
    docs = [json.loads(line) for line in (tmp_path / "out" / "documents.jsonl").read_text().splitlines()]
    assert [d["row"] for d in docs] == [r for r in range(1, 31) if r not in (2, 6)]
    assert seen and not any(t.strip().lower() in ("nan", "none", "") for t in seen)


def test_a_classifier_rung_is_not_an_embedding(bad_inputs, tmp_path, monkeypatch):
    info = {"rung": {"name": "lora", "method": "lora"}}
    monkeypatch.setattr("adaptlab.pipeline.load_run", lambda path: (get_task("classification"), object(), info))
    code, _, err = invoke("topics", bad_inputs["csv"], "--text", "body", "--embedding", fake_run(tmp_path / "lora"))
    assert code == 2
    assert "rung 'lora' (method lora) gives no sentence embeddings" in " ".join(err.split())


# ------------------------------------------------------------------------------------------ the page


def test_page_in_headless_chromium(found):
    from tests.e2e.test_report_browser import CHROMIUM, LAUNCH_ARGS, _browser_or_skip

    code, _, err, folder = found
    assert code == 0, err
    sync_playwright = _browser_or_skip()
    import os
    import shutil

    record = json.loads((folder / "topics.json").read_text(encoding="utf-8"))
    raw = (folder / "topics.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in raw  # the markup in the data, escaped
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                                    args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((folder / "topics.html").resolve().as_uri(), wait_until="load")
            assert problems == [] and all(u.startswith(("file://", "data:")) for u in requests), (problems, requests)
            assert page.locator("script").count() == 0  # the data's <script> stayed text

            svg = page.locator("#topic-map svg")
            box = svg.bounding_box()
            assert box and box["width"] > 600 and box["height"] > 300
            groups = page.locator("#topic-map svg g.topic")
            assert groups.count() == record["topic_count"]
            fills = groups.evaluate_all("gs => gs.map(g => getComputedStyle(g).fill)")
            assert len(set(fills)) == record["topic_count"]  # one colour per topic
            for topic in record["topics"]:
                group = page.locator(f'#topic-map svg g.topic[data-topic="{topic["id"]}"]')
                assert group.locator("circle").count() == topic["size"]
                card = page.locator(f"#topic-{topic['id']}")
                assert card.is_visible()
                shown = card.locator("ul.terms").inner_text()
                assert all(t["term"] in shown for t in topic["terms"])
            assert page.locator("#topic-map svg circle").count() == 3 * PER_THEME
            header = page.locator("header").inner_text()
            assert f"{record['topic_count']} topics" in header and "NPMI" in header and "diversity" in header
            shot = folder / "topics.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
