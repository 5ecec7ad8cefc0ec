"""The sentence-embedding task: metrics on hand-computable cases, records from a known ranking, intervals, paired
tests, the TF-IDF baseline, the collapse diagnosis and the report sections. Methods are test doubles: a hashed
bag of words and a fixed table of vectors."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pandas as pd
import pytest

from adaptlab.config import LadderSpec
from adaptlab.errors import UserError
from adaptlab.reporting.sections import RunResults
from adaptlab.tasks import get_task
from adaptlab.tasks.embedding.data import EmbeddingSplit
from adaptlab.tasks.embedding.metrics import correlation_resamples, correlations, ranking_values, separation
from adaptlab.tasks.embedding.records import build


class BagOfWords:
    """Hashed word counts, L2-normalised: texts sharing words are close."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, zlib.crc32(word.encode()) % 256] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class Table:
    """A fixed vector per text (any text not in the table: the ``default`` vector)."""

    def __init__(self, vectors: dict[str, list[float]], default: list[float] | None = None):
        self.vectors, self.default = vectors, default

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = np.array([self.vectors.get(t, self.default) for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


COLLAPSED = Table({}, default=[1.0, 1.0])


def prepared(frame: pd.DataFrame, **task: object):
    """The embedding task prepared on ``frame`` as both training and test split."""
    frame = frame.assign(_row=range(1, len(frame) + 1))
    frame.attrs["source"] = "data.jsonl"
    spec = LadderSpec.model_validate({"name": "t", "task": {"type": "embedding", **task}, "model": "minilm",
                                      "rungs": [{"method": "linear_probe"}], "data": {"path": "data.jsonl"}})
    embedding = get_task("embedding")
    data = embedding.prepare(spec, {"train": frame, "validation": frame.iloc[0:0], "test": frame})
    return embedding, data


def retrieval_frame(n: int = 40, hard: int = 0) -> pd.DataFrame:
    """Queries sharing a distinctive word with their own document only (but every ``hard``-th, which shares none)."""
    return pd.DataFrame({"query": [f"where is item{i} kept" for i in range(n)],
                         "document": [f"{'thing' if hard and i % hard == 0 else 'item'}{i} sits on shelf {i % 3}"
                                      for i in range(n)]})


# -- metrics on hand-computable cases ----------------------------------------------------------------------------


def test_ranking_values_of_known_ranks():
    one = ranking_values([3], [1, 5, 10])
    assert one["recall_at_1"] == 0 and one["recall_at_5"] == 1 and one["mrr_at_10"] == pytest.approx(1 / 3)
    assert one["ndcg_at_10"] == pytest.approx(0.5)  # 1 / log2(3 + 1)
    two = ranking_values([1, 4], [1, 5])
    assert two["recall_at_1"] == 0.5 and two["mrr_at_1"] == 1.0
    assert two["ndcg_at_5"] == pytest.approx((1 + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))


def test_ndcg_matches_scikit_learn_without_ties():
    from sklearn.metrics import ndcg_score

    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.7, 0.2])
    relevant = np.array([0, 1, 0, 1, 0, 0])
    ranks = [int(np.flatnonzero(np.argsort(-scores) == j)[0]) + 1 for j in np.flatnonzero(relevant)]
    for k in (1, 3, 5):
        assert ranking_values(ranks, [k])[f"ndcg_at_{k}"] == pytest.approx(ndcg_score([relevant], [scores], k=k))


def test_retrieval_records_rank_a_known_corpus():
    split = EmbeddingSplit(ids=["1", "2"], first=["q1", "q2"], second=["A", "C"], corpus_ids=["a", "b", "c"],
                           corpus=["A", "B", "C"], relevant=[["a"], ["c"]])
    table = Table({"q1": [1, 0], "q2": [1, 0], "A": [1, 0], "B": [0.6, 0.8], "C": [0, 1]})
    records = build(split, "retrieval", table.encode, label_names=[], positive=set(), k=[1, 5, 10])
    assert [r["relevant_ranks"] for r in records] == [[1], [3]]
    assert records[1]["prediction"] == ["a", "b", "c"] and records[1]["top_scores"] == pytest.approx([1, 0.6, 0])
    task = get_task("embedding")
    metrics = task.score(records, {"format": "retrieval"})
    assert metrics["mrr_at_10"] == pytest.approx((1 + 1 / 3) / 2) and metrics["recall_at_1"] == 0.5
    wrong = Table({"q1": [0, 1], "q2": [0.6, 0.8], "A": [1, 0], "B": [0.6, 0.8], "C": [0, 1]})
    worse = task.score(build(split, "retrieval", wrong.encode, label_names=[], positive=set(), k=[10]),
                       {"format": "retrieval"})
    assert worse["mrr_at_10"] < metrics["mrr_at_10"]


def test_ties_go_against_the_relevant_document():
    split = EmbeddingSplit(ids=["1"], first=["q"], second=["B"], corpus_ids=["a", "b", "c"], corpus=["A", "B", "C"],
                           relevant=[["b"]])
    records = build(split, "retrieval", COLLAPSED.encode, label_names=[], positive=set(), k=[1])
    assert records[0]["relevant_ranks"] == [3] and records[0]["prediction"] == ["a", "c", "b"]


def test_correlations_of_monotone_and_reversed_cosines():
    gold = [0.1, 0.4, 0.5, 0.9]
    assert correlations([0.2, 0.3, 0.35, 0.99], gold)["spearman"] == pytest.approx(1.0)
    assert correlations([0.9, 0.5, 0.4, 0.1], gold)["spearman"] == pytest.approx(-1.0)
    assert correlations([0.5] * 4, gold) == {"spearman": 0.0, "pearson": 0.0}  # constant cosines: no correlation


def test_vectorised_resamples_match_scipy():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    x, y = rng.random(30), rng.random(30)
    idx = rng.integers(0, 30, size=(3, 30))
    found = correlation_resamples(x, y, idx)
    for row in range(3):
        assert found["spearman"][row] == pytest.approx(spearmanr(x[idx[row]], y[idx[row]]).statistic)
        assert found["pearson"][row] == pytest.approx(pearsonr(x[idx[row]], y[idx[row]]).statistic)


def test_separation_of_labelled_pairs():
    perfect = separation([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    assert perfect["average_precision"] == 1.0 and perfect["roc_auc"] == 1.0 and perfect["best_accuracy"] == 1.0
    assert 0.3 < perfect["threshold"] <= 0.8
    mixed = separation([0.9, 0.2, 0.3, 0.1], [True, True, False, False])
    assert mixed["average_precision"] < 1.0 and mixed["best_accuracy"] == 0.75


# -- the task on prepared data -----------------------------------------------------------------------------------


def test_each_format_evaluates_with_intervals_around_the_value():
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(60)]
    first = [" ".join(rng.choice(words, 5)) for _ in range(50)]
    second = [" ".join(list(a.split()[:k]) + list(rng.choice(words, 5 - k))) for a, k in
              zip(first, rng.integers(0, 6, 50))]
    overlap = [len(set(a.split()) & set(b.split())) for a, b in zip(first, second)]
    frames = {
        "scored_pairs": (pd.DataFrame({"sentence1": first, "sentence2": second, "score": overlap}),
                         {"score_range": [0, 5]}),
        "labelled_pairs": (pd.DataFrame({"premise": first, "hypothesis": second,
                                         "label": [int(o > 2) ^ int(i % 4 == 0) for i, o in enumerate(overlap)]}),
                           {}),
        "triplets": (pd.DataFrame({"anchor": first, "positive": first[::-1], "negative": second}), {}),
        "retrieval": (retrieval_frame(hard=3), {}),
    }
    for fmt, (frame, settings) in frames.items():
        task, data = prepared(frame, **settings)
        assert data.format == fmt
        result = task.evaluate(task.predict(BagOfWords(), data.test), {**data.meta(), "seed": 3})
        value, (low, high) = result["metrics"][task.primary_metric], result["interval"][task.primary_metric]
        assert low - 1e-9 <= value <= high + 1e-9 and low < high, (fmt, value, low, high)
        assert result["n"] == len(data.test) and result["format"] == fmt


def test_score_is_evaluate_without_intervals_and_seeded():
    task, data = prepared(retrieval_frame())
    records = task.predict(BagOfWords(), data.test)
    meta = {**data.meta(), "seed": 0}
    assert task.score(records, meta) == task.evaluate(records, meta)["metrics"]
    assert task.evaluate(records, meta)["interval"] == task.evaluate(records, meta)["interval"]


def test_paired_test_finds_a_clear_difference_and_not_an_absent_one():
    task, data = prepared(retrieval_frame(60))
    good, bad = task.predict(BagOfWords(), data.test), task.predict(COLLAPSED, data.test)
    assert task.paired_test(good, bad, "mrr_at_10")["p_value"] < 0.01
    assert task.paired_test(good, good, "mrr_at_10")["p_value"] == 1.0


def test_paired_test_of_spearman_resamples_pairs():
    gold = np.linspace(0, 1, 40)
    best = [{"id": str(i), "reference": g, "prediction": g + 0.01 * (i % 3)} for i, g in enumerate(gold)]
    other = [{"id": str(i), "reference": g, "prediction": float(np.sin(9 * i))} for i, g in enumerate(gold)]
    task = get_task("embedding")
    test = task.paired_test(best, other, "spearman")
    assert test["p_value"] < 0.01 and "pairs resampled" in test["method"]
    assert task.paired_test(best, best, "spearman")["p_value"] == 1.0


def test_paired_test_of_triplets_is_mcnemar():
    best = [{"id": str(i), "prediction": "positive"} for i in range(30)]
    other = [{"id": str(i), "prediction": "negative" if i < 20 else "positive"} for i in range(30)]
    test = get_task("embedding").paired_test(best, other, "triplet_accuracy")
    assert test["method"].startswith("McNemar") and test["p_value"] < 0.01 and test["b"] == 20


def test_tfidf_baseline_is_a_real_reference_point():
    task, data = prepared(retrieval_frame())
    baseline = task.baselines(data, seed=0)["tfidf_cosine"]
    assert baseline["value"] == 1.0  # each query shares its rare word with its own document only
    assert baseline["interval"][0] <= baseline["value"] <= baseline["interval"][1]


def test_collapsed_embeddings_are_degenerate():
    task, data = prepared(retrieval_frame())
    collapsed = task.predict(COLLAPSED, data.test)
    assert all(r["relevant_ranks"] == [len(data.test.corpus)] for r in collapsed)
    verdict = task.diagnose(collapsed, {}, data)
    assert verdict["degenerate"] and verdict["doubted"] and "collapsed" in verdict["findings"][0]
    assert not task.diagnose(task.predict(BagOfWords(), data.test), {}, data)["degenerate"]


def test_report_shows_every_rung_and_the_hardest_queries():
    task, data = prepared(retrieval_frame())
    runs = []
    for name, method in (("bow", BagOfWords()), ("collapsed", COLLAPSED)):
        records = task.predict(method, data.test)
        result = task.evaluate(records, {**data.meta(), "seed": 0})
        metrics = {"metrics": result["metrics"], "intervals": result["interval"], "primary_metric": "mrr_at_10",
                   "format": "retrieval", "n": result["n"], "corpus_size": result["corpus_size"]}
        runs.append(RunResults(name, metrics, records))
    table, hardest = task.report_sections(runs)
    assert "| collapsed |" in table.markdown and "mrr_at_10" in table.markdown and "corpus of 40" in table.markdown
    worst = min(runs[0].records, key=lambda r: -r["relevant_ranks"][0])
    assert worst["query"] in hardest.markdown and "<table" in hardest.html


def test_predict_one_embeds_the_example_alone_and_encoders_are_refused():
    task, data = prepared(retrieval_frame())
    assert task.predict_one(BagOfWords(), data.test, 0).shape == (1, 256)
    with pytest.raises(UserError, match="can't learn sentence embeddings"):
        task.encoder_objective([], None)


def test_fingerprint_follows_the_data():
    task, data = prepared(retrieval_frame())
    _, other = prepared(retrieval_frame(41))
    assert task.fingerprint(data) == task.fingerprint(data) != task.fingerprint(other)


class Broken:
    """An encoder that returns ``vectors(texts)``."""

    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.vectors(texts)


def test_bad_encoder_output_is_a_user_error():
    task, data = prepared(retrieval_frame())
    with pytest.raises(UserError, match="one row per text"):
        task.predict(Broken(lambda texts: np.ones((len(texts) - 1, 4))), data.test)
    with pytest.raises(UserError, match="NaN or infinite"):
        task.predict(Broken(lambda texts: np.full((len(texts), 4), np.nan)), data.test)
