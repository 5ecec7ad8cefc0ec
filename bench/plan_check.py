"""The planner against measurement: `adaptlab plan` then `adaptlab compare` on the same ladder, per rung predicted
vs measured peak memory and time.

    .venv/bin/python bench/plan_check.py examples/rotten_tomatoes.yaml --output /tmp/plan-rt
    .venv/bin/python bench/plan_check.py CONFIG --output DIR --rungs lora,full --tolerance 0.25
    .venv/bin/python bench/plan_check.py CONFIG --output DIR --measured   # against a ladder already run there

Plan and ladder run in their own processes, one after the other (run it on an otherwise idle machine: the time
calibration and the measured times both assume the cores are free). Peak memory is what metrics.json records
(process RSS on CPU, torch's peak allocated memory on CUDA). Writes DIR/plan_check.json; exits 1 if any rung's
predicted peak is off by more than --tolerance (a fraction of the measured peak).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def adaptlab(*args: str) -> str:
    exe = Path(sys.executable).with_name("adaptlab")
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"adaptlab {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--output", required=True, help="Where the ladder runs (a fresh folder: nothing is resumed).")
    ap.add_argument("--rungs", default=None)
    ap.add_argument("--tolerance", type=float, default=0.25)
    ap.add_argument("--measured", action="store_true", help="--output already holds the finished ladder (same "
                    "config, run by this script or by adaptlab compare): plan only, compare with it.")
    args = ap.parse_args()
    out = Path(args.output)
    only = ["--rungs", args.rungs] if args.rungs else []
    planned = json.loads(adaptlab("plan", args.config, "--json", *only))
    if not args.measured:
        adaptlab("compare", args.config, "--output", str(out), *only)
    rows, worst = [], 0.0
    for p in planned["rungs"]:
        cost = json.loads((out / p["rung"] / "metrics.json").read_text())["cost"]
        measured, seconds = cost["peak_memory_mb"], cost.get("train_seconds")
        error = (p["peak_mb"] - measured) / measured
        worst = max(worst, abs(error))
        rows.append({"rung": p["rung"], "predicted_mb": p["peak_mb"], "measured_mb": measured,
                     "error": round(error, 3), "predicted_train_s": p["train_seconds"], "measured_train_s": seconds})
    print(f"{'rung':<24}{'predicted MB':>14}{'measured MB':>13}{'error':>8}{'predicted train s':>19}"
          f"{'measured train s':>18}")
    for r in rows:
        print(f"{r['rung']:<24}{r['predicted_mb']:>14.0f}{r['measured_mb']:>13.0f}{r['error']:>+8.1%}"
              f"{(r['predicted_train_s'] or 0):>19.0f}{(r['measured_train_s'] or 0):>18.0f}")
    (out / "plan_check.json").write_text(json.dumps({"config": args.config, "plan": planned, "rows": rows}, indent=1))
    print(f"worst peak error {worst:.1%} (tolerance {args.tolerance:.0%})")
    sys.exit(1 if worst > args.tolerance else 0)


if __name__ == "__main__":
    main()
