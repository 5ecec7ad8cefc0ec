"""ONNX and int8 exports with ``torch.onnx.export`` and onnxruntime (optimum 2.x no longer exports ONNX).

Causal LMs (with their KV cache as explicit tensors) are in :mod:`adaptlab.export.decoder`.
Encoder classifiers export with the TorchScript exporter (``dynamo=False``) and dynamic batch and sequence axes;
the int8 file is onnxruntime's dynamic quantisation of the fp32 one (8-bit unsigned weights per channel,
activations quantised at run time: see :func:`quantize_int8`). The tokenizer is saved beside the model so the
folder is all a CPU-only consumer needs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

OPSET = 17
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


def _logits_module(model: Any, inputs: list[str]) -> Any:
    """Wrap a sequence classifier so that ONNX sees positional int64 inputs and a single ``logits`` output."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(inputs, tensors))).logits

    return Logits().eval()


def export_classifier(model: Any, tokenizer: Any, dest: Path, max_length: int, per_token: bool = False) -> Path:
    """Write ``dest/model.onnx`` (inputs as the tokenizer gives them, output ``logits``) and the tokenizer.
    ``per_token``: the logits have a sequence axis too (token classifiers)."""
    import torch

    dest.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().to("cpu")
    sample = tokenizer(["a short example", "a somewhat longer second example text"], padding=True, truncation=True,
                       max_length=max_length, return_tensors="pt")
    inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes["logits"] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    file = dest / MODEL_FILE
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about Python control flow in the model
        torch.onnx.export(
            _logits_module(model, inputs), tuple(sample[k] for k in inputs), str(file), input_names=inputs,
            output_names=["logits"], dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )
    tokenizer.save_pretrained(str(dest))
    return file


def quantize_int8(source: Path, dest: Path) -> Path:
    """onnxruntime dynamic quantisation of an fp32 ONNX file: 8-bit weights, one scale per output channel.

    Per-channel scales matter: on the Rotten Tomatoes LoRA (MiniLM) per-tensor int8 changed 52 of 800 test
    predictions, per-channel 11. Weights are unsigned (U8U8 with the unsigned activations), not signed: on x86 CPUs
    without VNNI (AVX2 only, e.g. many AMD EPYC) onnxruntime multiplies U8S8 with an instruction that saturates, and
    the tiny test BERT's export lost 0.175 macro-F1 there while passing on a VNNI machine; U8U8 has no saturation,
    so an AVX2-only server no longer scores the file worse than the machine that exported it did (the Rotten
    Tomatoes LoRA: 60 of 2,562 labels changed, -0.005 macro-F1, vs 56 and -0.0065 with signed weights on the same
    AVX2 machine).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dest.with_name(dest.stem + ".pre.onnx")
    try:  # shape inference + graph optimisation first, as onnxruntime recommends for quantisation
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(dest), weight_type=QuantType.QUInt8, per_channel=True)
    finally:
        prepared.unlink(missing_ok=True)
    return dest
