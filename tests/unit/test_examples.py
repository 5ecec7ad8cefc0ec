"""Every shipped example config validates (fields, rung params), so README commands don't fail on a typo."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptlab.config import load_ladder, rung_params

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert {"rotten_tomatoes.yaml", "rotten_tomatoes_small.yaml"} <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path):
    spec = load_ladder(path)
    assert spec.rungs
    for rung in spec.rungs:
        rung_params(rung)
