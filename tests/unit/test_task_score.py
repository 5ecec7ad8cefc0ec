"""Every task's cheap ``score`` (what training validates with) gives exactly the metrics of its ``evaluate``."""

from __future__ import annotations

import pytest

from adaptlab.tasks import TASKS, get_task

CLASSIFICATION = (
    [{"id": str(i), "reference": ref, "prediction": pred}
     for i, (ref, pred) in enumerate([("pos", "pos"), ("neg", "pos"), ("neg", "neg"), ("mid", None), ("pos", "mid")])],
    {"label_names": ["neg", "mid", "pos"], "macro_labels": ["neg", "mid", "pos"]},
)
GENERATION = (
    [{"id": "1", "reference": "a b c", "prediction": "a b c", "nll": 1.5, "tokens": 3},
     {"id": "2", "reference": "the cat sat", "prediction": "a cat sat down", "nll": 4.25, "tokens": 4},
     {"id": "3", "reference": "x y", "prediction": "", "nll": 2.0, "tokens": 2}],
    {},
)
TOKENS = (
    [{"id": "1", "reference": ["B-PER", "I-PER", "O", "B-LOC"], "prediction": ["B-PER", "I-PER", "O", "O"]},
     {"id": "2", "reference": ["O", "B-ORG", "O"], "prediction": ["B-LOC", "B-ORG", "O"], "unparsed": True},
     {"id": "3", "reference": ["B-LOC", "O"], "prediction": ["B-LOC", "O"]}],
    {"entity_types": ["LOC", "ORG", "PER"]},
)
EMBEDDING = (
    [{"id": "1", "query": "a", "reference": ["d1"], "relevant_ranks": [1],
      "metrics": {"recall_at_10": 1.0, "mrr_at_10": 1.0, "ndcg_at_10": 1.0}, "corpus_size": 3},
     {"id": "2", "query": "b", "reference": ["d2"], "relevant_ranks": [3],
      "metrics": {"recall_at_10": 1.0, "mrr_at_10": 1 / 3, "ndcg_at_10": 0.5}, "corpus_size": 3}],
    {"format": "retrieval", "label_names": []},
)
PREFERENCE = (
    [{"id": "1", "score_chosen": -3.5, "score_rejected": -7.0, "correct": True},
     {"id": "2", "score_chosen": 0.25, "score_rejected": 1.0, "correct": False},
     {"id": "3", "score_chosen": 2.0, "score_rejected": 2.0, "correct": False}],
    {"format": "text"},
)
CASES = {"classification": CLASSIFICATION, "generation": GENERATION, "token_classification": TOKENS,
         "embedding": EMBEDDING, "preference": PREFERENCE}


def test_every_registered_task_is_covered():
    assert set(TASKS.names()) == set(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_score_equals_the_metrics_of_evaluate(name):
    task, (records, meta) = get_task(name), CASES[name]
    scored = task.score(records, {**meta, "seed": 0})
    assert scored == task.evaluate(records, {**meta, "seed": 0})["metrics"]
    assert task.primary_metric in scored
    assert 0 < len({round(v, 9) for v in scored.values()})  # real numbers, not an empty dict
    assert all(isinstance(v, float) for v in scored.values()), scored
