"""Quality on small real data (issue 16): the shipped small example, with every rung on its defaults.

    .venv/bin/python -m pytest -m slow tests/quality/test_small_data_ladder.py     # about 20 min on 2 cores

Every trained rung must beat both the majority-class baseline and embedding zero-shot on macro-F1 with
non-overlapping 95% intervals, none may be flagged degenerate, and full fine-tuning must not be significantly worse
than the plain hand-written loop in bench/small_data.py on the same split (the paired bootstrap 95% interval of the
macro-F1 difference not wholly below 0: one run of each is one draw).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "rotten_tomatoes_small.yaml"
TRAINED = ("linear_probe", "head_only", "top_layers", "lora", "full")


@pytest.mark.slow
def test_every_trained_rung_learns_on_the_small_example(tmp_path):
    from adaptlab.config import load_ladder
    from adaptlab.pipeline import compare, prepare

    board = compare(prepare(load_ladder(EXAMPLE), tmp_path / "out"))
    rungs = {e["rung"]: e for e in board["rungs"]}
    assert all(rungs[name]["status"] == "ok" for name in rungs), [e["error"] for e in board["rungs"]]
    floors = {"majority_class": board["baselines"]["majority_class"]["interval"],
              "embedding_zero_shot": rungs["embedding_zero_shot"]["interval"]}
    for name in TRAINED:
        low = rungs[name]["interval"][0]
        assert not rungs[name]["diagnosis"]["degenerate"], (name, rungs[name]["diagnosis"])
        for floor, (_, high) in floors.items():
            assert low > high, f"{name} {rungs[name]['interval']} overlaps {floor} [.., {high}]"


@pytest.mark.slow
def test_full_fine_tuning_matches_the_plain_loop(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "small_data.py"), str(EXAMPLE), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert result["difference"]["interval"][1] >= 0, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
