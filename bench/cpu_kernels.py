"""Why adaptlab runs fp32 on a CPU without oneDNN (adaptlab.runtime.cpu_kernels): the process's memory and the time
of MiniLM forward passes over batches padded to many lengths, with torch's oneDNN on and off, each in its own process.

    .venv/bin/python bench/cpu_kernels.py            # 140 batches of 64 at lengths 8-64
    .venv/bin/python bench/cpu_kernels.py --batches 40

oneDNN compiles (and keeps) a kernel for each input shape it runs; a fixed length meets one shape, dynamic padding
one per length. Prints, per case, resident memory after loading the model and at the end, and the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def one(onednn: bool, lengths: str, batches: int) -> dict:
    import random

    import psutil
    import torch
    from transformers import AutoModel

    from adaptlab.models.packaged import minilm_dir

    torch.backends.mkldnn.enabled = onednn
    random.seed(0)
    model = AutoModel.from_pretrained(str(minilm_dir())).eval()
    rss = lambda: psutil.Process().memory_info().rss / 2**20  # noqa: E731
    start, began = rss(), time.perf_counter()
    with torch.no_grad():
        for _ in range(batches):
            length = 64 if lengths == "fixed" else random.randint(8, 64)
            ids = torch.randint(1000, 2000, (64, length))
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return {"onednn": onednn, "lengths": lengths, "start_mb": round(start), "end_mb": round(rss()),
            "seconds": round(time.perf_counter() - began, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=140)
    ap.add_argument("--case", help="One case in this process: on|off,fixed|varied (e.g. off,fixed); prints JSON.")
    args = ap.parse_args()
    if args.case:
        onednn, lengths = args.case.split(",")
        print(json.dumps(one(onednn == "on", lengths, args.batches)))
        return
    print(f"{'oneDNN':<8}{'lengths':<10}{'start MB':>10}{'end MB':>9}{'grew MB':>9}{'seconds':>9}")
    for case in ("on,fixed", "on,varied", "off,fixed", "off,varied"):
        out = subprocess.run([sys.executable, __file__, "--case", case, "--batches", str(args.batches)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{case.split(',')[0]:<8}{r['lengths']:<10}{r['start_mb']:>10}{r['end_mb']:>9}"
              f"{r['end_mb'] - r['start_mb']:>9}{r['seconds']:>9}")


if __name__ == "__main__":
    main()
