"""Training throughput and peak memory: adaptlab vs a plain transformers+peft loop, measured in the same run.

    .venv/bin/python bench/train_cpu.py            # MiniLM, Rotten Tomatoes, seq 64, batch 32, 40 steps per case
    .venv/bin/python bench/train_cpu.py --steps 10 --model tiny-random-bert   # quick smoke run

Each case runs in its own process, so peak memory (max resident set size) is that case's alone. Samples/s counts
optimizer steps x batch size over the training loop's wall time (model loading and tokenisation excluded in both).
adaptlab uses its large-data defaults (length-grouped batches, dynamic padding); the plain loop pads each shuffled
batch to its longest text, as a hand-written notebook would. Exit code 1 if adaptlab is slower than the plain loop
by more than --tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LR = {"full": 5e-5, "lora": 5e-4}


def texts_and_labels(n: int, seed: int) -> tuple[list[str], list[int]]:
    from adaptlab.data.builtins import load_builtin

    frame = load_builtin("rotten_tomatoes").sample(n=n, random_state=seed)
    names = sorted(frame["label"].unique())
    return frame["text"].tolist(), [names.index(x) for x in frame["label"]]


def plain(method: str, model_spec: str, steps: int, batch: int, seq: int) -> dict:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adaptlab.models import resolve_model

    torch.manual_seed(0)
    path = str(resolve_model(model_spec).path)
    texts, labels = texts_and_labels(steps * batch, 0)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    if method == "lora":
        cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                         target_modules=["query", "value"])
        model = get_peft_model(model, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR[method])
    model.train()
    encoded = tok(texts, truncation=True, max_length=seq)  # tokenised up front, as datasets.map would
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    start = time.perf_counter()
    for s in range(steps):
        chunk = slice(s * batch, (s + 1) * batch)
        enc = tok.pad({k: encoded[k][chunk] for k in keys}, return_tensors="pt")  # pad to the batch's longest
        out = model(**enc, labels=torch.tensor(labels[chunk]))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples": steps * batch}


def adaptlab_case(method: str, model_spec: str, steps: int, batch: int, seq: int) -> dict:
    import tempfile
    from pathlib import Path

    import numpy as np

    from adaptlab.context import RunContext
    from adaptlab.methods import METHODS
    from adaptlab.tasks.classification import ClassificationData, Split

    texts, labels = texts_and_labels(steps * batch, 0)
    split = Split(ids=[str(i) for i in range(len(texts))], texts=texts, labels=np.array(labels))
    empty = split.subset([])
    data = ClassificationData(label_names=["fresh", "rotten"], train=split, validation=empty, test=empty)
    ctx = RunContext(model_spec=model_spec, task="classification", label_names=["fresh", "rotten"], max_length=seq)
    # group_by_length as adaptlab's default does from 4,000 training examples (the Rotten Tomatoes ladder's case);
    # the 40 x 32 examples here would otherwise count as small data and get random batches.
    params = {"learning_rate": LR[method], "batch_size": batch, "max_steps": steps, "evals_per_epoch": 0,
              "logging_steps": 10_000, "group_by_length": True}
    if method == "lora":
        params["target_modules"] = ["query", "value"]
    cls = METHODS.get(method)
    m = cls(cls.Params(**params), ctx)
    m.setup()
    with tempfile.TemporaryDirectory() as tmp:
        fit = m.fit(data, Path(tmp))
    return {"seconds": fit["train_seconds"], "samples": fit["steps"] * batch}


def child(args: argparse.Namespace) -> None:
    impl, method = args.case.split("-")
    fn = plain if impl == "plain" else adaptlab_case
    result = fn(method, args.model, args.steps, args.batch, args.seq)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--tolerance", type=float, default=0.05, help="Allowed slowdown fraction before failing.")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        child(args)
        return 0
    rows = {}
    for method in ("full", "lora"):
        for impl in ("plain", "adaptlab"):
            cmd = [sys.executable, __file__, "--case", f"{impl}-{method}", "--model", args.model,
                   "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows[(method, impl)] = json.loads(out.split("RESULT ", 1)[1])
    print(f"model={args.model} seq={args.seq} batch={args.batch} steps={args.steps} threads={os.cpu_count()}")
    print(f"{'method':<6} {'impl':<9} {'samples/s':>10} {'peak MB':>9}")
    ok = True
    for method in ("full", "lora"):
        speeds = {}
        for impl in ("plain", "adaptlab"):
            r = rows[(method, impl)]
            speeds[impl] = r["samples"] / r["seconds"]
            print(f"{method:<6} {impl:<9} {speeds[impl]:>10.1f} {r['peak_rss_mb']:>9.0f}")
        ratio = speeds["adaptlab"] / speeds["plain"]
        print(f"{method:<6} adaptlab/plain speed ratio: {ratio:.2f}")
        ok &= ratio >= 1 - args.tolerance
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
