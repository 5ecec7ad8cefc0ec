"""Small data: adaptlab's full fine-tuning against a plain hand-written PyTorch loop, on the same split.

    .venv/bin/python bench/small_data.py                                   # examples/rotten_tomatoes_small.yaml
    .venv/bin/python bench/small_data.py CONFIG --rung full --out runs/small_data_bench.json

The split is the ladder's own (``adaptlab.pipeline.prepare``), so both see the same 600 training and the same test
examples. The plain loop is what a careful notebook does: the base model's [CLS] token into a new linear layer,
AdamW at a constant learning rate, shuffled batches of 16, 3 epochs, no class weights, no validation. adaptlab's
rung runs with the config's settings (its defaults unless the config says otherwise). Both macro-F1 values come
with the same bootstrap 95% interval over test examples, and the difference (adaptlab minus the loop) with a paired
bootstrap 95% interval over the same test examples. Exit code 1 if adaptlab is significantly below the plain loop:
the whole interval of the difference below -(--tolerance). A point comparison of one run each would flip with the
runs' noise (adaptlab's default checkpoint choice alone moved its value by 0.02 on the shipped example, README).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def plain_loop(ladder, epochs: int, batch: int, lr: float) -> list[int]:
    """Predictions of the hand-written loop on the ladder's test split."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(ladder.spec.seed)
    path = str(ladder.ctx.model.path)
    tok = AutoTokenizer.from_pretrained(path)
    body = AutoModel.from_pretrained(path)
    head = torch.nn.Linear(body.config.hidden_size, ladder.ctx.num_labels)
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    train, test = ladder.data.train, ladder.data.test
    gen = torch.Generator().manual_seed(ladder.spec.seed)

    def logits(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, truncation=True, max_length=ladder.ctx.max_length, padding=True, return_tensors="pt")
        return head(body(**enc).last_hidden_state[:, 0])

    body.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=gen).tolist()
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(
                logits([train.texts[i] for i in idx]), torch.tensor(train.labels[idx], dtype=torch.long))
            loss.backward()
            opt.step()
            opt.zero_grad()
    body.eval()
    preds: list[int] = []
    with torch.inference_mode():
        for start in range(0, len(test), 64):
            preds += logits(test.texts[start : start + 64]).argmax(-1).tolist()
    return preds


def macro_f1_with_interval(refs, preds, k: int, seed: int) -> tuple[float, list[float]]:
    import numpy as np

    from adaptlab.evaluation.metrics import classification_metrics
    from adaptlab.evaluation.stats import bootstrap_classification

    refs, preds = np.asarray(refs), np.asarray(preds)
    per_class = classification_metrics(refs, preds, [str(i) for i in range(k)])["per_class"]
    value = float(np.mean([c["f1"] for c in per_class.values()]))
    return value, [float(x) for x in bootstrap_classification(refs, preds, k, metric="macro_f1", seed=seed)]


def difference_interval(refs, ours, theirs, k: int, seed: int) -> list[float]:
    """Paired bootstrap 95% interval of macro-F1(ours) - macro-F1(theirs), resampling the same test examples."""
    import numpy as np
    from sklearn.metrics import f1_score

    from adaptlab.evaluation.stats import bootstrap_interval

    refs, ours, theirs = np.asarray(refs), np.asarray(ours), np.asarray(theirs)
    labels = list(range(k))

    def difference(idx) -> float:
        def f1(preds):
            return f1_score(refs[idx], preds[idx], labels=labels, average="macro", zero_division=0)
        return float(f1(ours) - f1(theirs))

    return [float(x) for x in bootstrap_interval(difference, len(refs), seed=seed)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default=str(ROOT / "examples" / "rotten_tomatoes_small.yaml"))
    ap.add_argument("--rung", default="full", help="The adaptlab rung of the config to compare.")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--tolerance", type=float, default=0.0,
                    help="Allowed shortfall of adaptlab's interval's upper end below the plain loop before failing.")
    ap.add_argument("--out", help="Write the results as JSON here.")
    args = ap.parse_args()

    from adaptlab.config import load_ladder
    from adaptlab.pipeline import prepare, read_predictions, run_rung

    spec = load_ladder(args.config)
    with tempfile.TemporaryDirectory(prefix="adaptlab-small-bench-") as tmp:
        ladder = prepare(spec, Path(tmp))
        start = time.perf_counter()
        entry = run_rung(ladder, spec.rung(args.rung), record=False)
        ours_s = time.perf_counter() - start
        records = read_predictions(Path(tmp) / args.rung) if entry["status"] == "ok" else []
    if entry["status"] != "ok":
        print(f"adaptlab rung {args.rung} failed: {entry['error']}")
        return 1
    start = time.perf_counter()
    preds = plain_loop(ladder, args.epochs, args.batch, args.lr)
    plain_s = time.perf_counter() - start
    plain_f1, plain_iv = macro_f1_with_interval(ladder.data.test.labels, preds, ladder.ctx.num_labels, spec.seed)
    names = ladder.ctx.label_names
    by_id = {str(r["id"]): r["prediction"] for r in records}
    ours = [names.index(by_id[str(i)]) if by_id.get(str(i)) in names else -1 for i in ladder.data.test.ids]
    gap = difference_interval(ladder.data.test.labels, ours, preds, ladder.ctx.num_labels, spec.seed)
    d = ladder.data
    result = {
        "config": args.config, "split": {"train": len(d.train), "validation": len(d.validation), "test": len(d.test)},
        "adaptlab": {"rung": args.rung, "macro_f1": entry["value"], "interval": entry["interval"],
                     "seconds": round(ours_s, 1), "diagnosis": entry.get("diagnosis")},
        "plain": {"macro_f1": plain_f1, "interval": plain_iv, "seconds": round(plain_s, 1),
                  "settings": {"epochs": args.epochs, "batch": args.batch, "lr": args.lr, "head": "CLS + linear"}},
        "difference": {"macro_f1": entry["value"] - plain_f1, "interval": gap,
                       "note": "adaptlab minus the plain loop; paired bootstrap over the same test examples"},
    }
    print(f"split: train {len(d.train)} / validation {len(d.validation)} / test {len(d.test)}")
    for name in ("adaptlab", "plain"):
        r = result[name]
        print(f"{name:<9} macro-F1 {r['macro_f1']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] "
              f"in {r['seconds']:.0f} s")
    print(f"difference {result['difference']['macro_f1']:+.3f} [{gap[0]:+.3f}, {gap[1]:+.3f}] (paired)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if gap[1] >= -args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
