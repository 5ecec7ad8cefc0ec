"""``adaptlab plan CONFIG``: each rung's predicted peak memory and time, whether it fits, and the fix when not."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from adaptlab.cli import app, console, rung_names
from adaptlab.errors import UserError


@app.command()
def plan(
    config: Path = typer.Argument(..., help="Ladder spec (YAML)."),
    device: str | None = typer.Option(None, help="Plan for this device: cpu, cuda, cuda:N (default: the ladder's)."),
    memory: str | None = typer.Option(None, "--memory", "--gpu-memory", help="Memory to fit in, e.g. 24GiB "
                                      "(default: the device's: this machine's RAM, or the GPU's)."),
    rungs: str | None = typer.Option(None, help="Comma-separated rung names (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Before running: per rung, predicted peak memory (weights, gradients, optimiser, activations) and time."""
    from rich.table import Table

    from adaptlab.config import load_ladder
    from adaptlab.pipeline import prepare
    from adaptlab.planning import parse_size
    from adaptlab.planning import plan as make_plan

    budget = parse_size(memory) if memory else None
    _check_device(device, budget)
    spec = load_ladder(config)
    only = rung_names(spec, rungs)
    with console.status("loading data; setting each rung up (no training)"):
        result = make_plan(prepare(spec), device, budget, only)
    if as_json:
        console.print_json(json.dumps(result))
        return
    table = Table(title=f"{spec.name} on {result['device']} ({result['memory_mb'] / 1024:.1f} GiB); MB, seconds")
    for column in ("rung", "trainable", "weights", "grad+opt", "activ.", "peak", "batch", "steps", "time", "fits"):
        table.add_column(column, justify="left" if column == "rung" else "right")
    for r in result["rungs"]:
        table.add_row(r["rung"], f"{r['trainable']:,}", f"{r['weights_mb']:.0f}",
                      f"{r['gradients_mb'] + r['optimizer_mb']:.0f}", f"{r['activations_mb']:.0f}",
                      f"{r['peak_mb']:.0f}", f"{r['batch']}x{r['tokens']}", str(r["steps"] or "-"),
                      _seconds(r["seconds"]),
                      "yes" if r["fits"] else "[red]no[/red]")
    console.print(table)
    for r in result["rungs"]:
        if not r["fits"]:
            console.print(f"{r['rung']}: does not fit; " + (f"try {r['fix']}" if r["fix"] else
                          "no change found that fits (a smaller model, or a device with more memory)"),
                          highlight=False, soft_wrap=True)
        for note in r["notes"]:
            console.print(f"{r['rung']}: {note}", markup=False, highlight=False, soft_wrap=True)
    baseline = result["rungs"][0]["baseline_mb"] if result["rungs"] else 0
    console.print(f"peak = baseline {baseline:.0f} MB (this process with the data loaded) + weights + the larger of "
                  "training (gradients, optimiser states, activations) and scoring; see docs/planning.md",
                  highlight=False, soft_wrap=True)


def _check_device(device: str | None, budget: float | None) -> None:
    """UserError for a device the planner can't plan for here: not cpu/cuda[:N], a GPU index that doesn't exist,
    or a GPU this machine lacks with no --gpu-memory to plan against."""
    import re

    import torch

    if device is None:
        return
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise UserError(f"--device '{device}': use cpu, cuda or cuda:N.")
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s) (cuda:0 to "
                            f"cuda:{torch.cuda.device_count() - 1}).")
    elif device.startswith("cuda") and budget is None:
        raise UserError(f"--device {device}: this machine has no GPU to read the memory of; say how much the GPU "
                        "has with --gpu-memory (e.g. 24GiB).")


def _seconds(value: float | None) -> str:
    """Whole seconds, or two significant figures under ten (a tiny rung is not "0")."""
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.2g}"
