"""Rebuild a finished rung from its run folder (``<output>/<rung>``): its task and a method ready to predict.

Here rather than in the pipeline so that what loads finished runs (bundles, ``adaptlab.load``) needn't import the
pipeline that runs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.methods import METHODS, Method
from adaptlab.tasks import get_task


def load_run(run_dir: Path) -> tuple[Any, Method, dict]:
    """Rebuild a finished rung from its folder: (task, method ready to predict, run.json)."""
    run_dir = Path(run_dir)
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise UserError(f"{run_dir}: not a run folder (no run.json). Pass <output>/<rung>, e.g. runs/<ladder>/lora.")
    info = json.loads(run_file.read_text(encoding="utf-8"))
    metrics_file = run_dir / "metrics.json"
    status = json.loads(metrics_file.read_text(encoding="utf-8")).get("status") if metrics_file.is_file() else None
    if status != "ok":
        raise UserError(f"{run_dir}: this rung did not finish successfully (status: {status}); nothing to load.")
    ctx = RunContext.from_dict(info["context"])
    method_cls = METHODS.get(info["rung"]["method"])
    method = method_cls.load(run_dir / "weights", method_cls.Params.model_validate(info["params"]), ctx)
    return get_task(info["context"]["task"]), method, info


__all__ = ["load_run"]
