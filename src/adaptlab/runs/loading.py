"""Rebuild a finished rung from its run folder (``<output>/<rung>``): its task and a method ready to predict.

Here rather than in the pipeline so that what loads finished runs (bundles, ``adaptlab.load``) needn't import the
pipeline that runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptlab.context import RunContext
from adaptlab.errors import UserError
from adaptlab.methods import METHODS, Method
from adaptlab.runs.files import RUN_AGAIN, read_run_json
from adaptlab.tasks import get_task


def load_run(run_dir: Path) -> tuple[Any, Method, dict]:
    """Rebuild a finished rung from its folder: (task, method ready to predict, run.json)."""
    run_dir = Path(run_dir)
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise UserError(f"{run_dir}: not a run folder (no run.json). Pass <output>/<rung>, e.g. runs/<ladder>/lora.")
    info = read_run_json(run_file)
    metrics_file = run_dir / "metrics.json"
    status = read_run_json(metrics_file).get("status") if metrics_file.is_file() else None
    if status != "ok":
        raise UserError(f"{run_dir}: this rung did not finish successfully (status: {status}); nothing to load.")
    try:
        ctx = RunContext.from_dict(info["context"])
        method_cls = METHODS.get(info["rung"]["method"])
        params = method_cls.Params.model_validate(info["params"])
        task = get_task(info["context"]["task"])
    except (KeyError, TypeError, ValueError) as err:  # a pydantic ValidationError is a ValueError
        raise UserError(f"{run_file}: not what adaptlab writes ({type(err).__name__}: {err}); this run folder is "
                        f"damaged. {RUN_AGAIN}") from None
    return task, load_weights(run_dir / "weights", method_cls, params, ctx), info


def load_weights(weights: Path, method_cls: Any, params: Any, ctx: RunContext) -> Method:
    """The rung's method with its saved ``weights`` folder (a run's or a bundle's); missing, truncated or corrupt
    files are a UserError naming the folder. Read errors only: OSError (transformers' too, for a missing adapter
    folder), safetensors' and JSON's."""
    import json

    from safetensors import SafetensorError

    from adaptlab.runtime import kernels_for

    try:
        method = method_cls.load(weights, params, ctx)
    except (OSError, SafetensorError, json.JSONDecodeError) as err:
        raise UserError(f"{weights}: the rung's weights can't be read ({type(err).__name__}: {err}); this folder "
                        f"is damaged. {RUN_AGAIN}") from None
    kernels_for(ctx.torch_device, method.computes_in_half())  # it predicts with the kernels it ran with
    return method


__all__ = ["load_run"]
