"""Sentence-embedding data: the four formats read and detected, every bad input named by file and row, retrieval
corpora (split documents + an extra corpus file, ids), and groups kept on one side of the split."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from adaptlab.config import LadderSpec
from adaptlab.data.source import load_frames
from adaptlab.errors import DataError, UserError
from adaptlab.tasks import get_task
from adaptlab.tasks.embedding import EmbeddingSettings

SCORED = [("a man plays guitar", "a person plays music", 4.5), ("a dog runs", "a cat sleeps", 1.0),
          ("kids eat lunch", "children have a meal", 4.0), ("the sun is hot", "it rains a lot", 0.5)]
LABELLED = [("a man sings", "someone sings", "entailment"), ("a man sings", "nobody sings", "contradiction"),
            ("a dog barks", "an animal is loud", "entailment"), ("a dog barks", "a cat meows", "neutral")]
TRIPLETS = [("a red car", "a crimson automobile", "a green apple"), ("big house", "large home", "tiny mouse")]
RETRIEVAL = [("how do I boil an egg", "put the egg in boiling water"), ("capital of france", "paris is the capital"),
             ("how do I boil an egg", "boil it for ten minutes"), ("best pet", "dogs are loyal pets")]


def write(path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return str(path)


def spec_of(tmp_path, train: list[dict], test: list[dict] | None = None, task: dict | None = None, **data):
    """A ladder spec over explicit train/test JSONL files (or ``data`` as given) for the embedding task."""
    files = {"train": write(tmp_path / "train.jsonl", train), "test": write(tmp_path / "test.jsonl", test or train)}
    raw = {"name": "t", "task": {"type": "embedding", **(task or {})}, "model": "minilm",
           "rungs": [{"method": "linear_probe"}],  # no embedding rung exists yet; prepare never looks at rungs
           "data": {**files, "validation_size": 0.0, **data}, "base_dir": tmp_path}
    return LadderSpec.model_validate(raw)


def prepare(tmp_path, train: list[dict], test: list[dict] | None = None, task: dict | None = None, **data):
    spec = spec_of(tmp_path, train, test, task, **data)
    embedding = get_task("embedding")
    return embedding, embedding.prepare(spec, load_frames(spec, embedding.stratify_role))


def rows(columns: tuple[str, ...], values: list[tuple]) -> list[dict]:
    return [dict(zip(columns, v)) for v in values]


def test_scored_pairs_detected_and_rescaled_from_the_declared_range(tmp_path):
    task, data = prepare(tmp_path, rows(("sentence1", "sentence2", "score"), SCORED), task={"score_range": [0, 5]})
    assert data.format == "scored_pairs" and task.primary_metric == "spearman"
    assert data.test.first[0] == "a man plays guitar" and data.test.second[1] == "a cat sleeps"
    assert data.test.score == pytest.approx([0.9, 0.2, 0.8, 0.1])
    assert data.test.ids == ["1", "2", "3", "4"]


def test_labelled_pairs_detected_with_positive_labels_found(tmp_path):
    task, data = prepare(tmp_path, rows(("premise", "hypothesis", "label"), LABELLED))
    assert data.format == "labelled_pairs" and task.primary_metric == "average_precision"
    assert data.label_names == ["contradiction", "entailment", "neutral"]
    assert [data.label_names[i] for i in data.test.label] == ["entailment", "contradiction", "entailment", "neutral"]
    assert task.positive == {"entailment"}


def test_triplets_detected(tmp_path):
    task, data = prepare(tmp_path, rows(("anchor", "positive", "negative"), TRIPLETS))
    assert data.format == "triplets" and task.primary_metric == "triplet_accuracy"
    assert data.test.negative == ["a green apple", "tiny mouse"]
    same = [*TRIPLETS, ("a cat", "a small  dog", "a small dog ")]
    with pytest.raises(DataError, match=r"train\.jsonl: row 3: the positive \('positive'\) and the negative "
                       r"\('negative'\) are the same text"):
        prepare(tmp_path, rows(("anchor", "positive", "negative"), same), test=rows(("anchor", "positive",
                                                                                     "negative"), TRIPLETS))


def test_retrieval_corpus_is_the_splits_documents_and_repeated_queries_are_scored_once(tmp_path):
    _, data = prepare(tmp_path, rows(("query", "document"), RETRIEVAL))
    assert data.format == "retrieval"
    assert data.test.corpus_ids == ["row-1", "row-2", "row-3", "row-4"]
    assert data.test.first == ["how do I boil an egg", "capital of france", "best pet"]  # the repeat merged
    assert data.test.relevant == [["row-1", "row-3"], ["row-2"], ["row-4"]]
    assert len(data.train) == 4 and data.train.relevant[2] == ["row-1", "row-3"]  # training keeps every pair


def test_configured_columns_override_detection(tmp_path):
    custom = [{"q": q, "doc": d, "sim": s} for q, d, s in SCORED]
    _, data = prepare(tmp_path, custom, task={"first_column": "q", "second_column": "doc", "score_column": "sim",
                                              "score_range": [0, 5]})
    assert data.format == "scored_pairs" and data.test.first[0] == "a man plays guitar"


def test_unknown_columns_say_what_to_set(tmp_path):
    with pytest.raises(DataError, match=r"train.jsonl: cannot tell the embedding data's format .*task.format"):
        prepare(tmp_path, [{"x": "a", "y": "b"}] * 2)
    with pytest.raises(DataError, match=r"no column 'sentence2' .*task.second_column"):
        prepare(tmp_path, [{"sentence1": "a", "sentenc2": "b", "score": 1}] * 2, task={"format": "scored_pairs"})


def test_a_pair_with_a_missing_side_names_the_file_and_row(tmp_path):
    bad = rows(("sentence1", "sentence2", "score"), SCORED)
    bad[2]["sentence2"] = None  # JSON null: pandas reads NaN, never the text "nan"
    with pytest.raises(DataError, match=r"train.jsonl: column 'sentence2' is empty in 1 row: row 3 \(line 3\)\. "
                                        r"Drop these rows or fill in"):
        prepare(tmp_path, bad, rows(("sentence1", "sentence2", "score"), SCORED), task={"score_range": [0, 5]})


def test_blank_csv_cells_are_missing_not_nan(tmp_path):
    (tmp_path / "p.csv").write_text("anchor,positive,negative\na,b,c\nd,,f\ng,h,i\n", encoding="utf-8")
    spec = LadderSpec.model_validate({"name": "t", "task": {"type": "embedding"}, "model": "minilm",
                                      "rungs": [{"method": "linear_probe"}],
                                      "data": {"train": str(tmp_path / "p.csv"), "test": str(tmp_path / "p.csv"),
                                               "validation_size": 0.0}})
    with pytest.raises(DataError, match=r"p.csv: column 'positive' is empty in 1 row: row 2"):
        get_task("embedding").prepare(spec, load_frames(spec, None))


def test_scores_outside_the_declared_range_name_the_rows_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"outside task.score_range \[0, 1\] in 4 row\(s\): \S*train.jsonl: rows 1 "
                                        r"\(4\.5\), 3 \(4\); \S*test.jsonl: rows 1 \(4\.5\), 3 \(4\)\. "
                                        r"The scores run from 0\.5 to 4\.5: .*task.score_range: \[0, 4\.5\]"):
        prepare(tmp_path, rows(("sentence1", "sentence2", "score"), SCORED))
    # one file, split: the message covers every split, in file order, and the range it suggests holds every score
    many = [{"sentence1": f"a {i}", "sentence2": f"b {i}", "score": (i * 37 % 50) / 10} for i in range(40)]
    (tmp_path / "all.jsonl").write_text("\n".join(json.dumps(r) for r in many), encoding="utf-8")
    spec = LadderSpec.model_validate({"name": "t", "task": {"type": "embedding"}, "model": "minilm",
                                      "rungs": [{"method": "linear_probe"}], "base_dir": tmp_path,
                                      "data": {"path": "all.jsonl", "validation_size": 0.2, "test_size": 0.2}})
    with pytest.raises(DataError, match=r"in 31 row\(s\): \S*all.jsonl: rows 2 \(3\.7\), 3 \(2\.4\), 4 \(1\.1\), "
                                        r"5 \(4\.8\),.* and 21 more\. The scores run from 0 to 4\.9: .*\[0, 4\.9\]"):
        get_task("embedding").prepare(spec, load_frames(spec, None))
    bad = rows(("sentence1", "sentence2", "score"), SCORED)
    bad[1]["score"] = "high"
    with pytest.raises(DataError, match=r"column 'score' has no numeric score in row 2"):
        prepare(tmp_path, bad, task={"score_range": [0, 5]})
    bad[1]["score"] = True  # a JSON boolean, which pandas would read as 1
    with pytest.raises(DataError, match=r"column 'score' has no numeric score in row 2"):
        prepare(tmp_path, bad, task={"score_range": [0, 5]})


def test_labelled_pairs_need_to_know_the_positive_label(tmp_path):
    odd = rows(("premise", "hypothesis", "label"), [(a, b, "alike" if c == "entailment" else "other")
                                                    for a, b, c in LABELLED])
    with pytest.raises(DataError, match=r"set task.positive_labels"):
        prepare(tmp_path, odd)
    task, _ = prepare(tmp_path, odd, task={"positive_labels": ["alike"]})
    assert task.positive == {"alike"}
    with pytest.raises(DataError, match=r"task.positive_labels names 'alik', which no row has\. Did you mean 'alike'"):
        prepare(tmp_path, odd, task={"positive_labels": ["alik"]})


def test_extra_corpus_is_searched_and_keeps_its_ids(tmp_path):
    corpus = write(tmp_path / "corpus.jsonl", [{"id": "d1", "text": "paris is the capital"},
                                               {"id": "d2", "text": "a distractor about cars"}])
    _, data = prepare(tmp_path, rows(("query", "document"), RETRIEVAL), task={"corpus": corpus})
    assert data.test.corpus_ids == ["d1", "d2", "row-1", "row-3", "row-4"]
    assert data.test.relevant[1] == ["d1"]


def test_relevant_ids_point_into_the_corpus_file(tmp_path):
    corpus = write(tmp_path / "corpus.jsonl", [{"id": 1, "text": "paris"}, {"id": 2, "text": "eggs boil"}])
    queries = [{"query": "capital of france", "doc": 1}, {"query": "egg", "doc": "[1, 2]"}]
    _, data = prepare(tmp_path, queries, task={"corpus": corpus, "relevant_id_column": "doc"})
    assert data.test.corpus_ids == ["1", "2"] and data.test.relevant == [["1"], ["1", "2"]]
    assert data.test.second == ["paris", "paris"]
    missing = [*queries, {"query": "pets", "doc": 7}]
    with pytest.raises(DataError, match=r"test.jsonl: row 3: relevant document '7' .*not in the corpus file.*add a "
                                        r"document with that id"):
        prepare(tmp_path, queries, missing, task={"corpus": corpus, "relevant_id_column": "doc"})


def test_corpus_file_problems_name_the_corpus_rows(tmp_path):
    corpus = write(tmp_path / "corpus.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(DataError, match=r"corpus.jsonl: rows 1 and 2 have the same document id 'a'"):
        prepare(tmp_path, rows(("query", "document"), RETRIEVAL), task={"corpus": corpus})
    corpus = write(tmp_path / "corpus.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": None}])
    with pytest.raises(DataError, match=r"corpus.jsonl: column 'text' is empty in 1 row: row 2"):
        prepare(tmp_path, rows(("query", "document"), RETRIEVAL), task={"corpus": corpus})


def test_settings_are_checked_with_the_fix():
    with pytest.raises(ValidationError, match="give the corpus file too"):
        EmbeddingSettings(relevant_id_column="doc")
    with pytest.raises(ValidationError, match="needs its cutoff in task.k"):
        EmbeddingSettings(format="retrieval", primary_metric="mrr_at_20")
    with pytest.raises(ValidationError, match="not a metric of scored_pairs"):
        EmbeddingSettings(format="scored_pairs", primary_metric="mrr_at_10")
    with pytest.raises(ValidationError, match="Did you mean 'spearman'"):
        EmbeddingSettings(primary_metric="spearmann")
    with pytest.raises(ValidationError, match="low < high"):
        EmbeddingSettings(score_range=(5, 0))
    with pytest.raises(ValidationError, match="cutoff 7 is not one of"):
        EmbeddingSettings(k=[7])


def test_primary_metric_of_another_format_is_a_user_error_once_detected(tmp_path):
    with pytest.raises(UserError, match=r"task.primary_metric: primary_metric spearman is not a metric of triplets"):
        prepare(tmp_path, rows(("anchor", "positive", "negative"), TRIPLETS), task={"primary_metric": "spearman"})


def test_groups_never_cross_the_split(tmp_path):
    pairs = [{"query": f"q{g} {i}", "document": f"d{g} {i}", "conversation": f"c{g}"} for g in range(12)
             for i in range(5)]
    path = write(tmp_path / "all.jsonl", pairs)
    spec = LadderSpec.model_validate({"name": "t", "task": {"type": "embedding"}, "model": "minilm",
                                      "rungs": [{"method": "linear_probe"}],
                                      "data": {"path": path, "test_size": 0.1, "validation_size": 0.1,
                                               "group_column": "conversation"}})
    frames = load_frames(spec, None)
    data = get_task("embedding").prepare(spec, frames)
    group = {str(r): p["conversation"] for r, p in enumerate(pairs, start=1)}
    test_groups = {group[i] for i in data.test.ids}
    assert test_groups and not test_groups & {group[i] for i in data.train.ids + data.validation.ids}
    assert len(data.train) + len(data.validation) + len(data.test) == len(pairs)  # whole groups held out: no loss
    assert not set(data.test.corpus) & set(data.train.corpus)


def test_group_column_must_exist(tmp_path):
    with pytest.raises(DataError, match=r"column 'conv' \(data.group_column\) not found"):
        prepare(tmp_path, rows(("query", "document"), RETRIEVAL), group_column="conv")


def test_frames_from_pandas_nan_are_reported(tmp_path):
    """pandas 3 keeps a missing string as NaN: the reader must report it, never embed the text 'nan'."""
    frame = pd.DataFrame({"query": ["a", float("nan")], "document": ["b", "c"], "_row": [1, 2]})
    frame.attrs["source"] = "frame.csv"
    spec = spec_of(tmp_path, rows(("query", "document"), RETRIEVAL))
    with pytest.raises(DataError, match=r"frame.csv: column 'query' is empty in 1 row: row 2"):
        get_task("embedding").prepare(spec, {"train": frame, "validation": frame.iloc[0:0], "test": frame})


def test_training_texts_are_the_rows_own_never_the_extra_corpus(tmp_path):
    """What unsupervised rungs (TSDAE) and domain_mlm learn from: the split's rows, not the extra corpus every split
    searches (the test split's relevant documents may be in it), nor documents of rows a subset left out."""
    from adaptlab.tasks.embedding.data import EmbeddingSplit

    split = EmbeddingSplit(ids=["1", "2"], first=["q1", "q2"], second=["d1", "d2"], corpus_ids=["a", "b", "x"],
                           corpus=["d1", "d2", "extra document"], relevant=[["a"], ["b"]])
    assert split.texts == ["q1", "q2", "d1", "d2"] and split.pairs is None
    assert split.subset([1]).texts == ["q2", "d2"]
    assert split.subset([1]).corpus == split.corpus  # a subset still searches the whole corpus
