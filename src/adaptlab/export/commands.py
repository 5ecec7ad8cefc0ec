"""``adaptlab export``: ship a finished rung as a parity-checked bundle.

    adaptlab export runs/rotten_tomatoes/lora --to bundles/rt-lora --merge --onnx --int8

Exit codes: 0 exported and every artefact passed parity; 1 parity failed (the table and by how much are printed,
the rejected export is kept at ``<to>.failed``); 2 a user mistake (not a run folder, unsupported rung, ...).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from adaptlab.cli import app, console
from adaptlab.export.parity import FP32_TOLERANCE, INT8_TOLERANCE


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A finished rung folder, e.g. runs/rotten_tomatoes/lora."),
    to: Path = typer.Option(..., "--to", help="Bundle folder to write (replaced if it is an earlier bundle)."),
    merge: bool = typer.Option(False, "--merge", help="Also save the rung merged into the base (plain transformers)."),
    onnx: bool = typer.Option(False, "--onnx", help="Also export ONNX (fp32) with the tokenizer."),
    int8: bool = typer.Option(False, "--int8", help="Also export a dynamically quantised int8 ONNX (implies --onnx)."),
    tol_logit: float = typer.Option(FP32_TOLERANCE.logit, help="fp32 artefacts: max |Δlogit| against the run."),
    tol_prob: float = typer.Option(FP32_TOLERANCE.prob, help="fp32 artefacts: max |Δprobability| against the run."),
    tol_metric: float = typer.Option(FP32_TOLERANCE.metric, help="fp32 artefacts: max |Δ primary metric|."),
    int8_tol_prob: float = typer.Option(INT8_TOLERANCE.prob, help="int8: max |Δprobability| against the run."),
    int8_tol_metric: float = typer.Option(INT8_TOLERANCE.metric, help="int8: max |Δ primary metric|."),
    parity_limit: int | None = typer.Option(None, min=1, help="Check parity on the first N test examples only."),
) -> None:
    """Write a bundle (safetensors + manifest.json) and check every artefact against the run's test split."""
    from rich.table import Table

    from adaptlab.export import ParityError, Tolerance, export_run

    tolerance = Tolerance(logit=tol_logit, prob=tol_prob, metric=tol_metric)
    int8_tolerance = Tolerance(logit=None, prob=int8_tol_prob, metric=int8_tol_metric)
    status = console.status("exporting")
    status.start()
    try:
        report = export_run(run_dir, to, merge=merge, onnx=onnx, int8=int8, tolerance=tolerance,
                            int8_tolerance=int8_tolerance, parity_limit=parity_limit,
                            progress=lambda msg: status.update(msg))
        failure = None
    except ParityError as e:
        report, failure = e.report, e
    finally:
        status.stop()
    from adaptlab.export.exporter import summary_rows

    rows = summary_rows(report)
    table = Table(title=f"parity against {escape(str(run_dir))} (test split, {report['examples']} examples)")
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        style = None if row["status"] == "ok" else "red"
        table.add_row(*row.values(), style=style)
    console.print(table)
    if failure is not None:
        raise failure  # main() prints it and exits with ParityError.exit_code (1)
    console.print(f"[green]exported[/green] {escape(str(report['bundle']))} (parity.json, manifest.json)")
