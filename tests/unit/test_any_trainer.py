"""`adaptlab.training.train` with other Trainer classes: trl's SFTTrainer and sentence-transformers' trainer.

Each trains a tiny random model a few steps through ``train``; a run that dies while a checkpoint is being written
leaves no half checkpoint (the previous complete one is what resume uses), resuming it ends with the same weights
and losses as a run never interrupted, progress is reported, and a NaN loss stops training with advice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import sentiment_rows
from tests.generative_data import generation_rows, one_torch_thread  # noqa: F401  (autouse fixture)
from transformers import Trainer

from adaptlab.errors import TrainingError
from adaptlab.training import (
    STEP_REPORTER,
    AtomicCheckpoints,
    AtomicTrainer,
    TrainParams,
    atomic_trainer_class,
    last_checkpoint,
    train,
)

STEPS, EVERY, CRASH_AT = 8, 3, 6  # checkpoints at 3 and 6; the crash hits 6, so resume starts mid-epoch at 3
PARAMS = TrainParams(max_steps=STEPS, batch_size=4, learning_rate=1e-3, checkpoint_every_steps=EVERY,
                     evals_per_epoch=0, logging_steps=1)
RESUME_FILES = {"trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"}


@dataclass
class Case:
    """How to train one Trainer class: a fresh model, its data, and what ``train`` passes to the class."""

    build: Callable[[], Any]
    dataset: Callable[[], Any]
    trainer_cls: Callable[[], type[Trainer]]
    trainer_kwargs: Callable[[Any], dict[str, Any]]
    poison: Callable[[Any], None]  # makes the model's loss NaN
    weights_file: str
    args_cls: Callable[[], Any] = lambda: None
    args_kwargs: dict[str, Any] = field(default_factory=dict)


def _llama() -> Any:
    from transformers import AutoModelForCausalLM

    from adaptlab.models import resolve_model

    return AutoModelForCausalLM.from_pretrained(resolve_model("tiny-random-llama").location)


def _llama_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from adaptlab.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("tiny-random-llama").location)


def _sft_data() -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "completion": " " + r["completion"]}
                              for r in generation_rows(20)])


def _sentence_bert() -> Any:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from adaptlab.models import resolve_model

    encoder = Transformer(resolve_model("tiny-random-bert").location, max_seq_length=16)
    pooling = Pooling(encoder.get_embedding_dimension(), "mean")
    return SentenceTransformer(modules=[encoder, pooling], device="cpu")


def _pairs() -> Any:
    """(anchor, positive) pairs of same-sentiment sentences: 20 pairs, 5 batches of 4 per epoch."""
    from datasets import Dataset

    texts = [r["text"] for r in sentiment_rows(42)]
    return Dataset.from_dict({"anchor": texts[0:40:2], "positive": texts[2:42:2]})


def _nan_output(module: torch.nn.Module) -> None:
    module.register_forward_hook(lambda _m, _i, out: out * float("nan"))


def _sft_class() -> type[Trainer]:
    from trl import SFTTrainer

    return SFTTrainer


def _sft_config() -> Any:
    from trl import SFTConfig

    return SFTConfig


def _st_class() -> type[Trainer]:
    from sentence_transformers import SentenceTransformerTrainer

    return SentenceTransformerTrainer


def _mnrl(model: Any) -> dict[str, Any]:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return {"loss": MultipleNegativesRankingLoss(model)}


CASES = {
    "trl-sft-llama": Case(
        build=_llama, dataset=_sft_data, trainer_cls=_sft_class, args_cls=_sft_config,
        trainer_kwargs=lambda model: {"processing_class": _llama_tokenizer()},
        args_kwargs={"max_length": 32},
        poison=lambda model: _nan_output(model.model.norm), weights_file="model.safetensors",
    ),
    "sentence-transformers-mnrl-bert": Case(
        build=_sentence_bert, dataset=_pairs, trainer_cls=_st_class, trainer_kwargs=_mnrl,
        poison=lambda model: _nan_output(model[0].auto_model.embeddings), weights_file="modules.json",
    ),
}


@pytest.fixture(autouse=True)
def _tiny_models(tiny_bert):
    from adaptlab.models import resolve_model

    resolve_model("tiny-random-llama")  # built once into the shared models folder


def _run(case: Case, workdir: Path, resume: bool = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """Train a fresh model of ``case`` in ``workdir``; the result of ``train`` and the final weights."""
    torch.manual_seed(0)  # sentence-transformers' pooling and trl build nothing random, but be explicit
    model = case.build()
    result = train(model, params=PARAMS, train_dataset=case.dataset(), eval_dataset=None, workdir=workdir, seed=0,
                   use_cpu=True, resume=resume, trainer_cls=case.trainer_cls(),
                   trainer_kwargs=case.trainer_kwargs(model), args_cls=case.args_cls(), args_kwargs=case.args_kwargs)
    return result, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _losses(result: dict) -> list[float]:
    return [h["loss"] for h in result["history"] if "loss" in h]


def _crash_while_writing(monkeypatch, workdir: Path, seen: dict) -> None:
    """Make checkpoint CRASH_AT fail after its files are written but before it is moved into place, recording
    what a process reading the folder at that moment would see."""
    import adaptlab.training as training

    def fault(name: str) -> None:
        if name == f"checkpoint:{CRASH_AT}":
            root = workdir / "checkpoints"
            seen["scratch"] = {p.name for p in (root / ".scratch" / f"checkpoint-{CRASH_AT}").iterdir()}
            seen["visible"] = sorted(p.name for p in root.glob("checkpoint-*"))
            seen["last"] = last_checkpoint(workdir)
            raise RuntimeError("crashed mid-checkpoint")

    monkeypatch.setattr(training, "_fault_point", fault)


@pytest.mark.parametrize("name", list(CASES))
def test_crash_mid_checkpoint_then_resume_equals_straight_run(name, tmp_path, monkeypatch):
    case = CASES[name]
    progress: list[tuple[int, int]] = []
    token = STEP_REPORTER.set(lambda step, total, loss: progress.append((step, total)))
    try:
        straight, straight_weights = _run(case, tmp_path / "straight")
    finally:
        STEP_REPORTER.reset(token)
    assert progress == [(s, STEPS) for s in range(1, STEPS + 1)]
    assert straight["steps"] == STEPS and straight["resumed_from"] is None

    workdir, seen = tmp_path / "crashy", {}
    with monkeypatch.context() as patch:
        _crash_while_writing(patch, workdir, seen)
        with pytest.raises(RuntimeError, match="mid-checkpoint"):
            _run(case, workdir)
    # The crashed checkpoint was fully written, yet never visible; only the previous complete one was.
    assert {case.weights_file, *RESUME_FILES} <= seen["scratch"]
    assert seen["visible"] == [f"checkpoint-{EVERY}"] and seen["last"].name == f"checkpoint-{EVERY}"
    assert not (workdir / "checkpoints" / f"checkpoint-{CRASH_AT}").exists()
    assert {case.weights_file, *RESUME_FILES} <= {p.name for p in seen["last"].iterdir()}

    resumed, resumed_weights = _run(case, workdir, resume=True)
    assert resumed["resumed_from"] == f"checkpoint-{EVERY}" and resumed["steps"] == STEPS
    assert [h["step"] for h in resumed["history"] if "loss" in h] == list(range(1, STEPS + 1))
    assert _losses(resumed) == pytest.approx(_losses(straight), abs=1e-6)
    assert resumed_weights.keys() == straight_weights.keys()
    worst = max((resumed_weights[k].float() - straight_weights[k].float()).abs().max().item()
                for k in straight_weights)
    assert worst < 1e-6
    trained = CASES[name].build().state_dict()
    assert any(not torch.equal(trained[k], straight_weights[k]) for k in trained), "training changed nothing"


@pytest.mark.parametrize("name", list(CASES))
def test_non_finite_loss_stops_with_step_and_advice(name, tmp_path):
    case = CASES[name]
    model = case.build()
    case.poison(model)
    with pytest.raises(TrainingError, match=r"loss became nan at step 1 .*learning_rate"):
        train(model, params=PARAMS, train_dataset=case.dataset(), eval_dataset=None, workdir=tmp_path, seed=0,
              use_cpu=True, resume=False, trainer_cls=case.trainer_cls(), trainer_kwargs=case.trainer_kwargs(model),
              args_cls=case.args_cls(), args_kwargs=case.args_kwargs)


def test_atomic_class_wraps_every_save_checkpoint_once():
    from sentence_transformers import SentenceTransformerTrainer
    from trl import DPOTrainer, SFTTrainer

    assert atomic_trainer_class(Trainer) is AtomicTrainer
    for cls in (SFTTrainer, DPOTrainer, SentenceTransformerTrainer):
        atomic = atomic_trainer_class(cls)
        assert atomic.__mro__[1:3] == (AtomicCheckpoints, cls)  # first: it wraps the class's own overrides
        assert atomic_trainer_class(cls) is atomic and atomic_trainer_class(atomic) is atomic
    with pytest.raises(TypeError, match="Trainer subclass"):
        atomic_trainer_class(dict)
