"""A pinned training loss (torchtune style): a silent change in training shows as a changed number.

The ``full`` rung trains a tiny random BERT for 10 steps on 64 synthetic sentiment rows (seed 0, CPU, fp32,
batch 8) and its logged training loss must equal the value pinned here to 1e-4. Data order, tokenisation, head
initialisation, class weights, loss, optimizer and learning-rate schedule all move it.

How the values were obtained: ``python -m tests.unit.test_pinned_loss`` (prints the 10 logged losses), run twice in
separate processes with 1 and 2 torch threads: bit-identical then (with oneDNN's GELU; torch's own, which rungs use
now, moves them by under 1e-7, inside the tolerance), so the pin is not a tolerance for noise.
With torch 2.13 (CPU), transformers 5.23, tiny-random-bert recipe 1.

When a deliberate change moves it (a new default, a fixed bug, a library upgrade), rerun the command above, check
the new losses still fall (a first loss near ln 2 = 0.693, lower by step 10), and pin them with a line in the
commit message saying why they moved. Never widen the tolerance to make a change pass.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from tests.conftest import sentiment_rows

STEPS = 10
PINNED_FIRST = 0.64056396484375  # the loss at step 1: data, tokenisation, initialisation and loss, before any update
PINNED_LAST = 0.5413302183151245  # the loss at step 10: the above plus optimizer, schedule and data order


def train_losses(workdir: Path, threads: int = 1) -> list[float]:
    """The logged training losses (one per step) of the pinned ``full`` run, trained in ``workdir``."""
    from adaptlab.context import RunContext
    from adaptlab.methods import METHODS
    from adaptlab.tasks.classification import ClassificationData, Split

    rows = sentiment_rows(64)
    split = Split(ids=[str(i) for i in range(len(rows))], texts=[r["text"] for r in rows],
                  labels=np.array([int(r["label"] == "pos") for r in rows]))
    data = ClassificationData(label_names=["neg", "pos"], train=split, validation=split.subset([]),
                              test=split.subset([]))
    ctx = RunContext(model_spec="tiny-random-bert", task="classification", label_names=["neg", "pos"],
                     max_length=16, seed=0, device="cpu")
    cls = METHODS.get("full")
    params = cls.Params(max_steps=STEPS, batch_size=8, learning_rate=1e-3, logging_steps=1, evals_per_epoch=0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        method = cls(params, ctx)
        method.setup()
        fit = method.fit(data, workdir)
    finally:
        torch.set_num_threads(before)
    return [h["loss"] for h in fit["history"] if "loss" in h]


def test_full_rung_loss_equals_pinned_value(tmp_path, tiny_bert):
    losses = train_losses(tmp_path / "a", threads=1)
    assert len(losses) == STEPS
    assert abs(losses[0] - PINNED_FIRST) < 1e-4, f"step-1 loss {losses[0]!r} moved; see the module docstring"
    assert abs(losses[-1] - PINNED_LAST) < 1e-4, f"step-{STEPS} loss {losses[-1]!r} moved; see the module docstring"


def test_same_losses_twice_in_one_process_and_within_1e6_whatever_the_threads(tmp_path, tiny_bert):
    """A second run in this process (state left by the first) gives the same losses exactly, so the pin above tests
    training, not luck. Another thread count gives them to the last bits only: a rung trains in fp32 on a CPU with
    torch's own kernels, not oneDNN's (adaptlab.runtime.cpu_kernels), and those differed by 6e-8 between 1 and 2
    threads at step 4."""
    from adaptlab.runtime import Runtime, cpu_kernels

    with cpu_kernels(Runtime(device="cpu", precision="fp32")):  # as in a ladder, whatever earlier tests left
        first, again = train_losses(tmp_path / "a", threads=1), train_losses(tmp_path / "b", threads=1)
        other = train_losses(tmp_path / "c", threads=2)
    assert first == again
    assert np.allclose(first, other, rtol=0, atol=1e-6), (first, other)


if __name__ == "__main__":
    import os

    os.environ.setdefault("ADAPTLAB_HOME", tempfile.mkdtemp())
    with tempfile.TemporaryDirectory() as folder:
        print(train_losses(Path(folder)))
