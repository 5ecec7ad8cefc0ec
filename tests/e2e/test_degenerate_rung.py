"""A rung that learned nothing is flagged in the terminal table, leaderboard.json and the report, and the
recommendation excludes it and says why (issue 16)."""

from __future__ import annotations

import json

from tests.conftest import write_config
from typer.testing import CliRunner

from adaptlab.cli import app


def test_rung_forced_to_learn_nothing_is_flagged_everywhere(tmp_path, sentiment_csv, tiny_bert):
    rungs = [
        {"method": "few_shot", "params": {"shots": 8}},
        # a learning rate of 1e-12 cannot move the weights: the loss stays at the label prior's
        {"method": "full", "name": "stuck", "params": {"learning_rate": 1.0e-12, "max_steps": 4}},
        {"method": "full", "name": "learns", "params": {"learning_rate": 5.0e-3, "max_steps": 40}},
    ]
    config = write_config(tmp_path, sentiment_csv, tiny_bert, rungs)
    result = CliRunner().invoke(app, ["compare", str(config)], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "⚠ stuck learned nothing (excluded from the recommendation)" in result.output
    assert "never went below" in result.output

    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    by_name = {e["rung"]: e for e in board["rungs"]}
    assert by_name["stuck"]["diagnosis"]["degenerate"] is True
    assert by_name["learns"]["diagnosis"]["degenerate"] is False
    run = json.loads((tmp_path / "out" / "stuck" / "run.json").read_text())
    assert run["training"]["class_weights"] == {"neg": 1.0, "pos": 1.0}
    assert run["training"]["schedule"]["steps"] == 4

    md = (tmp_path / "out" / "report.md").read_text()
    assert "⚠ DEGENERATE" in md and "## Rungs that learned nothing" in md
    assert "Excluded as degenerate: stuck" in md
    assert "**Ship `stuck`" not in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="diagnosis"' in html and "stuck" in html
    assert "Baseline: majority_class" in md
    assert board["baselines"]["majority_class"]["value"] < by_name["learns"]["value"]
