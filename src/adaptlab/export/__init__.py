"""Shipping a rung: adapter bundles, merged models, ONNX and int8 files, each parity-checked against the run.

    adaptlab export runs/rotten_tomatoes/lora --to bundles/rt-lora --merge --onnx --int8

See :mod:`adaptlab.export.exporter` for the steps and :mod:`adaptlab.bundle` for the folder and ``adaptlab.load``.
"""

from adaptlab.export.exporter import export_run
from adaptlab.export.parity import FP32_TOLERANCE, INT8_TOLERANCE, ParityError, Tolerance

__all__ = ["FP32_TOLERANCE", "INT8_TOLERANCE", "ParityError", "Tolerance", "export_run"]
