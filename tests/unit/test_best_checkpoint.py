"""Best checkpoint by the validation score, early stopping, and both across a crash and resume.

A tiny linear classifier trains through :func:`adaptlab.training.train` (the transformers Trainer) for 10 steps with a
validation evaluation every 2 steps (steps 2, 4, 6, 8, 10). A scripted :class:`ValidationScorer` returns fixed values
at those evaluations and records the model's weights each time it is called, so the test knows exactly which weights
belong to which evaluation and can compare them with the weights the model ends with.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import adaptlab.training as training
from adaptlab.training import VALIDATION_SCORER, TrainParams, ValidationScorer, last_checkpoint, train

EVAL_STEPS = [2, 4, 6, 8, 10]


class Tiny(torch.nn.Module):
    """Two features -> two classes with dropout (training draws from torch's random generator at every step);
    the loss the Trainer optimises is plain cross-entropy."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(2, 2)
        self.dropout = torch.nn.Dropout(0.3)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.linear(self.dropout(x))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def _data(n: int, flip: bool = False):
    """``n`` separable points; ``flip`` swaps the labels (the validation loss then rises as training goes)."""
    from datasets import Dataset

    xs = [[float(i % 2) * 2 - 1 + 0.1 * (i % 5), float(i % 3) * 0.1] for i in range(n)]
    ys = [(i % 2) ^ int(flip) for i in range(n)]
    return Dataset.from_dict({"x": xs, "labels": ys})


class Scripted:
    """A scorer returning ``values`` in turn, recording (step index, training mode, weights) at each call."""

    def __init__(self, model: torch.nn.Module, values: list[float], higher_is_better: bool = True) -> None:
        self.model, self.values, self.calls = model, list(values), []
        self.scorer = ValidationScorer("macro_f1", higher_is_better, self)

    def __call__(self) -> float:
        self.calls.append((self.model.training, _weights(self.model)))
        torch.manual_seed(1234)  # as generation does: training must not see it
        return self.values[len(self.calls) - 1]


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train(workdir: Path, values: list[float] | None, resume: bool = False, flip_validation: bool = False,
           **params) -> tuple[dict, Tiny, Scripted | None]:
    model = Tiny()
    scripted = Scripted(model, values) if values is not None else None
    p = TrainParams(**{"max_steps": 10, "batch_size": 4, "learning_rate": 0.3, "evals_per_epoch": 2,
                       "logging_steps": 1, "warmup_ratio": 0.0, "weight_decay": 0.0, **params})
    token = VALIDATION_SCORER.set(scripted.scorer if scripted else None)
    try:
        result = train(model, params=p, train_dataset=_data(16), eval_dataset=_data(8, flip_validation),
                       workdir=workdir, seed=0, use_cpu=True, resume=resume)
    finally:
        VALIDATION_SCORER.reset(token)
    return result, model, scripted


def test_metric_keeps_the_best_evaluation_later_tie_wins(tmp_path):
    values = [0.2, 0.6, 0.4, 0.6, 0.3]  # the best, 0.6, at steps 4 and 8: the later one is kept
    result, model, scripted = _train(tmp_path / "metric", values)
    selection = result["selection"]
    assert selection["by"] == "metric" and selection["metric"] == "macro_f1"
    assert (selection["best_step"], selection["best_value"], selection["kept_step"]) == (8, 0.6, 8)
    assert selection["evaluations"] == 5 and selection["stopped_early_at"] is None and result["steps"] == 10
    assert _same(_weights(model), scripted.calls[3][1]), "the model must end with the weights of step 8"
    assert not _same(_weights(model), scripted.calls[4][1]), "step 10's weights differ: the test means something"
    assert not any(training for training, _ in scripted.calls), "scored in eval mode"
    curve = [(h["step"], h["eval_macro_f1"]) for h in result["history"] if "eval_macro_f1" in h]
    assert curve == list(zip(EVAL_STEPS, values))
    assert all("eval_loss" in h for h in result["history"] if "eval_macro_f1" in h)


def test_loss_keeps_the_lowest_validation_loss_and_last_keeps_the_final_weights(tmp_path):
    values = [0.1, 0.2, 0.3, 0.4, 0.9]  # the metric would pick step 10; by loss it must not matter
    result, model, scripted = _train(tmp_path / "loss", values, flip_validation=True, select_best="loss")
    losses = {h["step"]: h["eval_loss"] for h in result["history"] if "eval_loss" in h}
    best = min(losses, key=lambda s: (losses[s], -s))
    assert best != 10, "flipped validation labels: the validation loss rises, so its minimum is early"
    selection = result["selection"]
    assert (selection["by"], selection["metric"], selection["best_step"]) == ("loss", "loss", best)
    assert selection["best_value"] == pytest.approx(losses[best])
    assert _same(_weights(model), scripted.calls[EVAL_STEPS.index(best)][1])

    last, last_model, unused = _train(tmp_path / "last", values, flip_validation=True, select_best="last")
    assert not unused.calls, "select_best last without patience scores nothing"
    assert last["selection"]["by"] == "last" and last["selection"]["kept_step"] == 10
    assert last["selection"]["evaluations"] == 0 and last["selection"]["best_step"] is None
    # the final weights: those the metric-scored run had at step 10 (scoring, which reseeds torch, moved nothing)
    assert _same(_weights(last_model), scripted.calls[4][1])
    assert not any("eval_macro_f1" in h for h in last["history"])


def test_without_a_scorer_or_validation_the_final_weights_are_kept(tmp_path):
    result, _, _ = _train(tmp_path / "none", None)
    assert result["selection"]["by"] == "last" and result["selection"]["requested"] == "metric"
    assert "no task metric" in result["selection"]["note"]
    result, _, scripted = _train(tmp_path / "noeval", [0.5] * 5, evals_per_epoch=0)
    assert result["selection"]["by"] == "last" and "no validation evaluations" in result["selection"]["note"]
    assert not scripted.calls


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    values = [0.5, 0.7, 0.6, 0.65, 0.9]  # best at step 4; steps 6 and 8 do not beat it: stop at 8 (patience 2)
    result, model, scripted = _train(tmp_path / "early", values, early_stopping_patience=2)
    selection = result["selection"]
    assert selection["stopped_early_at"] == 8 and result["steps"] == 8 and selection["evaluations"] == 4
    assert (selection["best_step"], selection["kept_step"], selection["patience"]) == (4, 4, 2)
    assert len(scripted.calls) == 4
    assert _same(_weights(model), scripted.calls[1][1])
    # a tie is no improvement: flat scores stop as early as patience allows
    flat, _, _ = _train(tmp_path / "flat", [0.5] * 5, early_stopping_patience=2)
    assert flat["selection"]["stopped_early_at"] == 6 and flat["selection"]["best_step"] == 6


def test_resume_after_the_best_evaluation_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    values = [0.3, 0.9, 0.5, 0.4, 0.6]  # best at step 4, before checkpoint 6; the crash hits checkpoint 9
    straight, straight_model, _ = _train(tmp_path / "straight", values, checkpoint_every_steps=3)
    assert straight["selection"]["best_step"] == 4

    workdir = tmp_path / "crashy"

    def crash(name: str) -> None:
        if name == "checkpoint:9":
            raise RuntimeError("crashed mid-checkpoint")

    with monkeypatch.context() as patch:
        patch.setattr(training, "_fault_point", crash)
        with pytest.raises(RuntimeError, match="mid-checkpoint"):
            _train(workdir, values, checkpoint_every_steps=3)
    checkpoint = last_checkpoint(workdir)
    assert checkpoint.name == "checkpoint-6"
    assert {training.SELECTION_WEIGHTS, training.SELECTION_STATE} <= {p.name for p in checkpoint.iterdir()}
    # the resumed run evaluates steps 8 and 10 only: its scorer's script starts there
    resumed, resumed_model, scripted = _train(workdir, values[3:], resume=True, checkpoint_every_steps=3)
    assert resumed["resumed_from"] == "checkpoint-6" and len(scripted.calls) == 2
    assert resumed["selection"] == straight["selection"]
    assert _same(_weights(resumed_model), _weights(straight_model))
    curve = [(h["step"], h["eval_macro_f1"]) for h in resumed["history"] if "eval_macro_f1" in h]
    assert curve == list(zip(EVAL_STEPS, values)), "the curve before the checkpoint comes back with it"
