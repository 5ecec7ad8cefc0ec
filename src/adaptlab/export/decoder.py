"""Causal LMs as ONNX with the KV cache as explicit tensors, a greedy decoder over them, and their parity check.

The exported graph takes ``input_ids``, ``attention_mask`` (past + new positions), ``position_ids`` and, per layer,
``past.{i}.key`` / ``past.{i}.value`` of shape (batch, kv_heads, past_len, head_dim); it returns ``logits`` and the
grown ``present.{i}.key`` / ``present.{i}.value``. Prefill passes a past of length 0, each decode step one token.
The same greedy loop drives the torch model and the ONNX file, so parity compares the models and nothing else.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.export.parity import Tolerance, over_tolerance
from adaptlab.generation.decoding import eos_ids

DECODER_JSON = "decoder.json"
Step = Callable[[np.ndarray, np.ndarray, np.ndarray, Any], tuple[np.ndarray, Any]]


def cache_shape(config: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a decoder config."""
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers, kv_heads, head_dim


def export_decoder(model: Any, tokenizer: Any, dest: Path, opset: int = 17) -> Path:
    """Write ``dest/model.onnx`` (a decoder step with explicit past key values), ``decoder.json`` and the tokenizer."""
    import torch
    from transformers import DynamicCache

    dest.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().to("cpu")
    layers, kv_heads, head_dim = cache_shape(model.config)

    class DecoderStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *present)

    batch, past_len, new = 2, 3, 4  # a non-empty past while tracing, so no axis is specialised to 0
    past_names = [f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    inputs = ["input_ids", "attention_mask", "position_ids", *past_names]
    axes = {"input_ids": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"},
            **{n: {0: "batch", 2: "past"} for n in past_names}, **{n: {0: "batch", 2: "total"} for n in present_names}}
    sample = (torch.randint(0, 10, (batch, new)), torch.ones(batch, past_len + new, dtype=torch.long),
              torch.arange(past_len, past_len + new).expand(batch, new).contiguous(),
              *[torch.zeros(batch, kv_heads, past_len, head_dim) for _ in past_names])
    file = dest / "model.onnx"
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(DecoderStep().eval(), sample, str(file), input_names=inputs,
                          output_names=["logits", *present_names], dynamic_axes=axes, opset_version=opset,
                          dynamo=False)
    tokenizer.save_pretrained(str(dest))
    meta = {"kind": "causal", "layers": layers, "kv_heads": kv_heads, "head_dim": head_dim, "inputs": inputs,
            "outputs": ["logits", *present_names], "eos_token_ids": sorted(eos_ids(model, tokenizer))}
    (dest / DECODER_JSON).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return file


def torch_step(model: Any) -> Step:
    """A decode step over a transformers/peft causal LM, its cache kept as a DynamicCache."""
    import torch

    def step(ids, mask, pos, past):
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        position_ids=torch.from_numpy(pos), past_key_values=past, use_cache=True)
        return out.logits[:, -1].float().numpy(), out.past_key_values

    return step


class OnnxDecoder:
    """An exported decoder run by onnxruntime; ``step`` has the same shape as :func:`torch_step`."""

    def __init__(self, file: Path):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        self.meta = json.loads((file.parent / DECODER_JSON).read_text(encoding="utf-8"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(file.parent), local_files_only=True)
        self.past_names = self.meta["inputs"][3:]

    def step(self, ids, mask, pos, past):
        if past is None:
            shape = (ids.shape[0], self.meta["kv_heads"], 0, self.meta["head_dim"])
            past = [np.zeros(shape, dtype=np.float32) for _ in self.past_names]
        out = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                                      **dict(zip(self.past_names, past))})
        return out[0][:, -1], out[1:]

    def generate(self, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy continuations of ``prompts``."""
        return greedy(self.step, self.tokenizer, prompts, max_new_tokens, set(self.meta["eos_token_ids"]))[0]


def greedy(step: Step, tokenizer: Any, prompts: list[str], max_new_tokens: int,
           eos: set[int]) -> tuple[list[str], list[np.ndarray]]:
    """Greedy decoding, left-padded, batched: (continuations, the last-position logits of every step)."""
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="np", padding=True, add_special_tokens=False)
    ids = enc["input_ids"].astype(np.int64)
    mask = enc["attention_mask"].astype(np.int64)
    pos = np.clip(mask.cumsum(-1) - 1, 0, None)
    past, out, done, steps = None, [[] for _ in prompts], np.zeros(len(prompts), bool), []
    for _ in range(max_new_tokens):
        logits, past = step(ids, mask, pos, past)
        steps.append(np.asarray(logits, dtype=np.float64))
        nxt = logits.argmax(-1)
        for i, token in enumerate(nxt.tolist()):
            if not done[i]:
                if token in eos:
                    done[i] = True
                else:
                    out[i].append(token)
        if done.all():
            break
        ids = nxt.astype(np.int64)[:, None]
        mask = np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], axis=1)
        pos = pos[:, -1:] + 1
    return [tokenizer.decode(o, skip_special_tokens=True) for o in out], steps


def _logit_diff(steps: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Max |Δlogit| over the decoding steps, per prompt only while both have chosen the same tokens so far."""
    same = np.ones(len(steps[0]) if steps else 0, dtype=bool)
    diff = 0.0
    for a, b in zip(steps, reference):
        if same.any():
            diff = max(diff, float(np.max(np.abs(a[same] - b[same]))))
        same &= a.argmax(-1) == b.argmax(-1)
    return diff


def generation_metric(name: str, predictions: list[str], references: list[str]) -> float:
    from adaptlab.evaluation import metrics

    if name == "bleu":
        return metrics.bleu(predictions, references)
    if name == "chrf":
        return metrics.chrf(predictions, references)
    if name == "exact_match":
        return metrics.exact_match(predictions, references)
    return metrics.rouge_scores(predictions, references).get(name if name.startswith("rouge") else "rougeL")


def check_generation(records: list[dict], artifact: str, step: Step, tokenizer: Any, reference: dict | None,
                     tolerance: Tolerance, file: str, max_new_tokens: int, eos: set[int],
                     metric: str) -> tuple[dict, dict]:
    """Greedy-decode the run's test prompts with ``step`` and compare with ``reference`` (the run's weights).

    Returns the JSON result and this artefact's outputs (texts and per-step logits), which the first check (the
    rung's weights) hands to the later ones as their reference.
    """
    prompts = [r["prompt"] for r in records]
    refs = [r["reference"] for r in records]
    start = time.perf_counter()
    texts, steps = greedy(step, tokenizer, prompts, max_new_tokens, eos)
    seconds = time.perf_counter() - start
    value = generation_metric(metric, texts, refs)
    outputs = {"texts": texts, "steps": steps, "value": value}
    if reference is None:  # the rung's own weights: compared with what the run recorded (informative only)
        recorded = [r.get("prediction", "") for r in records]
        run_value = generation_metric(metric, recorded, refs)
        changed = sum(a.strip() != b.strip() for a, b in zip(texts, recorded))  # the rungs record stripped text
        logit_diff, failures = None, []
    else:
        run_value = reference["value"]
        changed = sum(a != b for a, b in zip(texts, reference["texts"]))
        logit_diff = _logit_diff(steps, reference["steps"])
        failures = []
        if tolerance.logit is not None and logit_diff > tolerance.logit:
            failures.append(over_tolerance("max |Δlogit|", logit_diff, tolerance.logit))
        if abs(value - run_value) > tolerance.metric:
            failures.append(over_tolerance(f"|Δ{metric}|", abs(value - run_value), tolerance.metric))
    return {
        "artifact": artifact, "file": file, "examples": len(records), "max_abs_logit_diff": logit_diff,
        "max_abs_prob_diff": None, "changed_predictions": int(changed), "metric": metric, "run_value": run_value,
        "value": value, "metric_delta": value - run_value, "tolerance": tolerance.__dict__, "passed": not failures,
        "failures": failures, "seconds": round(seconds, 3),
        "compared_with": "the run's recorded predictions (informative: decoding settings may differ)"
        if reference is None else "the rung's weights, same greedy decoding",
    }, outputs
