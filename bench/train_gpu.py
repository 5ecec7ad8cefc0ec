"""The GPU fast path against plain transformers+peft, measured in the same run (each case in its own process).

    python bench/train_gpu.py                       # TinyLlama-1.1B shape, random init, batch 8 x 2048, 60 steps
    python bench/train_gpu.py --smoke --device cpu  # a tiny shape on CPU: checks the script, measures nothing

Cases: LoRA r=16 on every linear layer, and full fine-tuning; each as a plain loop (transformers Trainer, bf16
autocast, SDPA, torch AdamW: what a hand-written notebook does) and as adaptlab trains it (adaptlab.training.train
under the runtime that ``auto`` resolves to on this device: bf16, Liger's kernels when liger-kernel is installed,
torch.compile, fused AdamW; padding-free batches don't change fixed-length batches). Same seed, same batches.
Reported per case: tokens/s (after --warmup steps), peak GiB (torch's max allocated), MFU against the GPU's dense
bf16 peak, and the first 50 steps' losses. Targets (exit 1 when missed, on CUDA only): adaptlab LoRA >= 3x plain
tokens/s at <= half its peak memory, adaptlab full fine-tuning >= 1.4x; the loss curves of a fast and a plain case
agree within 1% (mean relative difference over the first 50 steps). Writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=512, max_position_embeddings=128)
#: Dense bf16 peak FLOP/s by GPU name (for MFU).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}
CASES = ("lora/plain", "lora/adaptlab", "full/plain", "full/adaptlab")


def build(shape: dict, method: str, device: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shape, attn_implementation="sdpa", use_cache=False)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    return model


def batches(shape: dict, batch: int, seq: int, steps: int) -> list[dict]:
    """Random token sequences (a plain list: the GPU machine has no `datasets`)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, shape["vocab_size"], (batch * steps, seq), generator=gen)
    return [{"input_ids": row, "labels": row} for row in ids]


class Clock:
    """Step end times, synchronised with the device, for tokens/s after the warm-up steps."""

    def __init__(self, device: str):
        self.device, self.ends = device, []

    def __call__(self, *_args) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


def run_case(case: str, shape: dict, batch: int, seq: int, steps: int, device: str) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    method, impl = case.split("/")
    model = build(shape, method, device)
    data = batches(shape, batch, seq, steps)
    clock = Clock(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    common = dict(max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-4 if method == "lora"
                  else 2e-5, warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[], seed=0,
                  use_cpu=not cuda, disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0)
    if impl == "plain":
        class Timing(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                clock()

        args = TrainingArguments(output_dir=f"/tmp/bench-gpu-{method}-plain", bf16=cuda, optim="adamw_torch",
                                 **common)
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Timing()])
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    else:
        losses = adaptlab_case(model, data, method, common, clock, device)
    tokens = batch * seq
    warm = min(len(clock.ends) - 2, max(1, steps // 6))
    seconds = (clock.ends[-1] - clock.ends[warm]) / (len(clock.ends) - 1 - warm)
    n = sum(p.numel() for p in model.parameters())
    return {"case": case, "tokens_per_s": tokens / seconds, "step_s": seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "flops_per_token": (6 if method == "full" else 4) * n, "losses": losses[:50]}


def adaptlab_case(model, data, method: str, common: dict, clock, device: str) -> list[float]:
    from pathlib import Path
    from tempfile import mkdtemp

    from transformers import DataCollatorWithFlattening, default_data_collator

    from adaptlab.runtime import CAUSAL_SFT_OPTIONS, RUNTIME, Machine, RuntimeSpec, resolve
    from adaptlab.training import STEP_REPORTER, TrainParams, train

    runtime = resolve(RuntimeSpec(), Machine.of(device), CAUSAL_SFT_OPTIONS, causal=True, rung=method)
    params = TrainParams(max_steps=common["max_steps"], batch_size=common["per_device_train_batch_size"],
                         learning_rate=common["learning_rate"], warmup_ratio=0.0, logging_steps=1,
                         evals_per_epoch=0, weight_decay=0.0, select_best="last")
    tokens = [RUNTIME.set(runtime), STEP_REPORTER.set(lambda *a: clock())]
    try:
        collator = DataCollatorWithFlattening() if runtime.packing else default_data_collator
        result = train(model, params=params, train_dataset=data, eval_dataset=None, collator=collator,
                       workdir=Path(mkdtemp(prefix="bench-gpu-")), seed=0, use_cpu=not device.startswith("cuda"),
                       resume=False)
    finally:
        STEP_REPORTER.reset(tokens[1])
        RUNTIME.reset(tokens[0])
    print(json.dumps({"runtime": runtime.record()}), file=sys.stderr)
    return [h["loss"] for h in result["history"] if "loss" in h]


def compare(results: dict, device_name: str, cuda: bool) -> list[str]:
    """The targets missed (empty when all are met); only judged on CUDA."""
    misses = []
    peak = next((v for k, v in PEAK_FLOPS.items() if k in device_name), None)
    for r in results.values():
        r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / peak if peak else None
    if not cuda:
        return misses
    lp, la, fp, fa = (results[c] for c in CASES)
    if la["tokens_per_s"] < 3 * lp["tokens_per_s"] or la["peak_gib"] > 0.5 * lp["peak_gib"]:
        misses.append(f"LoRA: {la['tokens_per_s'] / lp['tokens_per_s']:.2f}x tokens/s at "
                      f"{la['peak_gib'] / lp['peak_gib']:.2f}x memory (target >= 3x at <= 0.5x)")
    if fa["tokens_per_s"] < 1.4 * fp["tokens_per_s"]:
        misses.append(f"full: {fa['tokens_per_s'] / fp['tokens_per_s']:.2f}x tokens/s (target >= 1.4x)")
    for method, plain, fast in (("lora", lp, la), ("full", fp, fa)):
        pairs = list(zip(plain["losses"], fast["losses"]))
        drift = sum(abs(a - b) / abs(a) for a, b in pairs) / max(1, len(pairs))
        results[f"{method}/adaptlab"]["loss_drift_vs_plain"] = drift
        if drift > 0.01:
            misses.append(f"{method}: loss curves differ by {drift:.2%} on average over {len(pairs)} steps (> 1%)")
    return misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--smoke", action="store_true", help="A tiny shape (batch 2 x 32): checks the script only.")
    ap.add_argument("--out", default="bench_gpu.json")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape = SMOKE if args.smoke else TINYLLAMA
    batch, seq = (2, 32) if args.smoke else (args.batch, args.seq)
    if args.case:
        print(json.dumps(run_case(args.case, shape, batch, seq, args.steps, args.device)))
        return
    results = {}
    for case in CASES:
        cmd = [sys.executable, __file__, "--case", case, "--device", args.device, "--steps", str(args.steps),
               "--batch", str(batch), "--seq", str(seq)] + (["--smoke"] if args.smoke else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{case} failed:\n{done.stderr[-4000:]}")
        results[case] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[case]
        print(f"{case:<15} {r['tokens_per_s']:>10.0f} tokens/s  peak {r['peak_gib'] or 0:6.1f} GiB", flush=True)
    import torch

    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else "cpu"
    misses = compare(results, name, cuda)
    with open(args.out, "w") as f:
        json.dump({"device": name, "shape": shape, "batch": batch, "seq": seq, "results": results,
                   "missed": misses}, f, indent=1)
    for line in misses:
        print("MISSED:", line)
    sys.exit(1 if misses else 0)


if __name__ == "__main__":
    main()
