"""Training budgets that scale with the data, class weights, and a weighted loss that respects accumulation."""

from __future__ import annotations

import pytest

from adaptlab.training import GROUP_BY_LENGTH_FROM, Schedule, TrainParams, balanced_class_weights


@pytest.mark.parametrize("examples, epochs, steps", [(600, 4.0, 152), (100, 20.0, 140), (9000, 1.0, 563)])
def test_auto_epochs_reach_min_steps(examples, epochs, steps):
    s = Schedule.resolve(TrainParams(), examples)
    assert (s.epochs, s.steps, s.batch_size) == (epochs, steps, 16)


def test_explicit_epochs_and_max_steps_win():
    assert Schedule.resolve(TrainParams(epochs=1.0), 600).steps == 38
    assert Schedule.resolve(TrainParams(max_steps=7), 600).steps == 7


def test_length_grouping_only_on_large_data():
    assert not Schedule.resolve(TrainParams(), GROUP_BY_LENGTH_FROM - 1).group_by_length
    assert Schedule.resolve(TrainParams(), GROUP_BY_LENGTH_FROM).group_by_length
    assert Schedule.resolve(TrainParams(group_by_length=True), 10).group_by_length


def test_balanced_weights():
    assert balanced_class_weights([0, 0, 0, 1], 3) == pytest.approx([4 / 6, 2.0, 1.0])  # absent class: 1


def test_weighted_loss_is_not_multiplied_by_gradient_accumulation(tmp_path, tiny_bert):
    """Logged loss with 2 accumulated micro-batches of 8 equals one batch of 16 (not twice it)."""
    import numpy as np
    from tests.conftest import sentiment_rows

    from adaptlab.context import RunContext
    from adaptlab.methods import METHODS
    from adaptlab.tasks.classification import ClassificationData, Split

    rows = sentiment_rows(16)
    split = Split(ids=[str(i) for i in range(16)], texts=[r["text"] for r in rows],
                  labels=np.array([int(r["label"] == "pos") for r in rows]))
    data = ClassificationData(label_names=["neg", "pos"], train=split, validation=split.subset([]),
                              test=split.subset([]))
    ctx = RunContext(model_spec=tiny_bert, task="classification", label_names=["neg", "pos"], max_length=16)
    losses = []
    for batch, accumulate in ((16, 1), (8, 2)):
        cls = METHODS.get("full")
        method = cls(cls.Params(max_steps=1, batch_size=batch, gradient_accumulation_steps=accumulate,
                                logging_steps=1, evals_per_epoch=0), ctx)
        method.setup()
        fit = method.fit(data, tmp_path / f"w{batch}")
        assert fit["class_weights"] is not None
        losses.append(next(h["loss"] for h in fit["history"] if "loss" in h))
    assert losses[1] == pytest.approx(losses[0], rel=0.1)
