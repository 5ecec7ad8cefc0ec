"""Serving load test: `adaptlab serve` vs a naive server, same adapters, same 32 clients, measured in the same run.

    .venv/bin/python bench/serve_load.py                      # minilm, a trained inverted pair, 2 x 60 s
    .venv/bin/python bench/serve_load.py --adapter rt=runs/rotten_tomatoes/lora \
        --adapter probe=runs/rotten_tomatoes/linear_probe
    .venv/bin/python bench/serve_load.py --base tiny-random-bert --duration 10     # a quick smoke run
    .venv/bin/python bench/serve_load.py --replicas 2 --skip-naive     # 1 vs 2 replicas (Ray Serve), same run

What it does, all on 127.0.0.1:
1. Trains two LoRA classifiers on the base for a few steps on synthetic sentiment texts, one on the true labels and
   one on inverted labels, so that they answer differently: a response from the wrong adapter shows.
2. Starts `adaptlab serve` with them (plus any --adapter) and asks every (model, text) once, one request at a time:
   the expected answers.
3. 32 concurrent clients send single-text /v1/classify requests with random models (the pair, the other adapters
   and the bare base, zero-shot) for --duration seconds; every answer is checked against the expected one.
4. The same against the naive baseline: the same HTTP layer, but each request loads its adapter from disk onto
   the base, runs alone (no batching) and unloads it again.
5. With --replicas N (N > 1): the same against `adaptlab serve --replicas N` (Ray Serve, one front), right after
   the one-process server of step 3, so that 1 and N replicas are measured in the same run.
Prints (and with --out writes) req/s, p50/p95/p99 latency, errors, lost and mixed-up responses per server.
Exit code 1 if any response was lost or mixed up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HOST = "127.0.0.1"
POSITIVE = ["great", "wonderful", "brilliant", "moving", "delightful", "superb", "charming", "excellent", "gripping"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "tedious", "clumsy", "lifeless", "dreadful", "pointless"]
NEUTRAL = ["film", "movie", "story", "plot", "cast", "script", "ending", "director", "score"]
ZERO_SHOT = {"positive": "A positive movie review.", "negative": "A negative movie review."}


def synthetic(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Texts whose label (1 positive, 0 negative) is carried by sentiment words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.sample(POSITIVE if label else NEGATIVE, 2) + rng.sample(NEUTRAL, 2)
        rng.shuffle(words)
        texts.append("the " + " ".join(words))
        labels.append(label)
    return texts, labels


def train_pair(base: str, dest: Path, steps: int) -> dict[str, Path]:
    """Two LoRA classifiers on ``base``: ``pair_true`` on the labels, ``pair_inverted`` on the inverted labels."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adaptlab.models import load_kwargs, resolve_model

    resolved = resolve_model(base)
    tokenizer = AutoTokenizer.from_pretrained(resolved.location)
    texts, labels = synthetic(512, seed=0)
    test_texts, test_labels = synthetic(64, seed=1)
    out = {}
    for name, flip in (("pair_true", False), ("pair_inverted", True)):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(resolved.location, num_labels=2,
                                                                   **load_kwargs(resolved))
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16,
                                                 target_modules=["query", "value"]))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
        model.train()
        for step in range(steps):
            idx = [(step * 16 + j) % len(texts) for j in range(16)]
            enc = tokenizer([texts[i] for i in idx], padding=True, return_tensors="pt")
            target = torch.tensor([1 - labels[i] if flip else labels[i] for i in idx])
            loss = model(**enc, labels=target).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        with torch.inference_mode():
            pred = model(**tokenizer(test_texts, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
        accuracy = sum(p == (1 - y if flip else y) for p, y in zip(pred, test_labels)) / len(test_labels)
        print(f"trained {name}: {steps} steps, accuracy on its own (held-out synthetic) labels {accuracy:.2f}")
        model.save_pretrained(str(dest / name))
        out[name] = dest / name
    return out


def request_texts(n: int) -> list[str]:
    """Half synthetic sentiment texts, half Rotten Tomatoes snippets (when the data package is installed)."""
    texts = synthetic(n // 2, seed=2)[0]
    try:
        from adaptlab.data.builtins import load_builtin

        texts += load_builtin("rotten_tomatoes").sample(n=n - len(texts), random_state=0)["text"].str[:300].tolist()
    except Exception:  # noqa: BLE001 - the data package is optional here
        texts += synthetic(n - len(texts), seed=3)[0]
    return texts


# -- servers ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(kind: str, base: str, adapters: dict[str, Path], port: int, log: Path,
                 replicas: int = 1, replica_cpus: float = 1.0) -> subprocess.Popen:
    flags = [arg for name, path in adapters.items() for arg in ("--adapter", f"{name}={path}")]
    if kind in ("adaptlab", "replicas"):
        cmd = [sys.executable, "-m", "adaptlab", "serve", "--base", base, *flags, "--host", HOST, "--port", str(port),
               "--max-queue", "1024"]
        if kind == "replicas":
            cmd += ["--replicas", str(replicas), "--replica-cpus", str(replica_cpus)]
    else:
        cmd = [sys.executable, __file__, "--naive-server", "--base", base, *flags, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{kind} server did not start in 300 s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server and whatever it started (Ray's processes with --replicas)."""
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    _, alive = psutil.wait_procs(children, timeout=30)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


class NaiveEngine:
    """The baseline: adapters live on disk; each request loads its adapter onto the base, runs alone, unloads it."""

    def __init__(self, base: str, adapters: dict[str, Path]):
        from adaptlab.serving.adapters import resolve_adapter
        from adaptlab.serving.transformers_engine import TransformersEngine, default_threads

        self.engine = TransformersEngine(base, device="cpu", threads=default_threads())  # as adaptlab serve
        self.base_name = base
        self.specs = {name: resolve_adapter(name, path) for name, path in adapters.items()}
        infos = {}
        for name, spec in self.specs.items():  # once, only to learn each adapter's labels
            infos[name] = self.engine.load_adapter(spec)
            self.engine.unload_adapter(name)
        self.infos = infos

    def adapters(self):
        return [self.engine.adapters()[0], *self.infos.values()]

    def classify(self, adapter, batch):
        if adapter == "base":
            return [self.engine.classify(adapter, [item])[0] for item in batch]
        out = []
        for item in batch:
            self.engine.load_adapter(self.specs[adapter])
            try:
                out.append(self.engine.classify(adapter, [item])[0])
            finally:
                self.engine.unload_adapter(adapter)
        return out

    def generate(self, adapter, prompts, params):
        raise NotImplementedError

    def chat_prompt(self, adapter, messages):
        raise NotImplementedError

    def load_adapter(self, spec):
        raise NotImplementedError

    def unload_adapter(self, name):
        raise NotImplementedError


def naive_server(args: argparse.Namespace) -> None:
    import uvicorn

    from adaptlab.serving.app import create_app
    from adaptlab.serving.settings import ServerSettings

    adapters = dict(_parse(a) for a in args.adapter)
    app = create_app(NaiveEngine(args.base, adapters), ServerSettings(max_batch_size=1, max_wait_ms=0, max_queue=1024))
    uvicorn.run(app, host=HOST, port=args.port, log_level="warning", access_log=False)


# -- clients ---------------------------------------------------------------------------------------------------


def body(model: str, text: str) -> dict:
    b = {"model": model, "input": text}
    if model == "base":
        b["labels"] = ZERO_SHOT
    return b


async def expected_answers(url: str, models: list[str], texts: list[str]) -> dict[tuple[str, int], dict]:
    """Every (model, text) asked once, one request at a time: the reference answers."""
    import httpx

    answers = {}
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for model in models:
            for i, text in enumerate(texts):
                r = await client.post("/v1/classify", json=body(model, text))
                r.raise_for_status()
                answers[(model, i)] = r.json()["data"][0]
    return answers


async def load(url: str, models: list[str], texts: list[str], expected: dict, clients: int, duration: float,
               seed: int) -> dict:
    """``clients`` concurrent clients for ``duration`` seconds; each answer checked against ``expected``."""
    import httpx

    stats = {"latencies": [], "errors": {}, "lost": 0, "mixed": 0, "distinguishing": 0, "sent": 0, "replicas": set()}
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(k: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(seed * 1000 + k)
        while time.perf_counter() < stop_at:
            model, i = rng.choice(models), rng.randrange(len(texts))
            stats["sent"] += 1
            start = time.perf_counter()
            try:
                r = await client.post("/v1/classify", json=body(model, texts[i]))
            except httpx.HTTPError:
                stats["lost"] += 1
                continue
            elapsed = time.perf_counter() - start
            if r.status_code != 200:
                stats["errors"][r.status_code] = stats["errors"].get(r.status_code, 0) + 1
                continue
            stats["latencies"].append(elapsed)
            if "x-adaptlab-replica" in r.headers:  # which replica answered (adaptlab serve --replicas N)
                stats["replicas"].add(r.headers["x-adaptlab-replica"])
            got, want = r.json(), expected[(model, i)]
            data = got.get("data") or [{}]
            same = got.get("model") == model and data[0].get("label") == want["label"] and all(
                abs(data[0]["scores"].get(k, -1) - v) < 1e-4 for k, v in want["scores"].items())
            stats["mixed"] += not same
            others = [m for m in models if m != model and m != "base" and "base" != model]
            if any(expected[(m, i)]["label"] != want["label"] for m in others):
                stats["distinguishing"] += 1

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(client_loop(k, client) for k in range(clients)))
    stats["wall_s"] = time.perf_counter() - start
    return stats


def summary(name: str, stats: dict) -> dict:
    import numpy as np

    lat = np.array(stats["latencies"]) * 1000 if stats["latencies"] else np.array([float("nan")])
    ok = len(stats["latencies"])
    return {
        "server": name, "requests_ok": ok, "req_per_s": ok / stats["wall_s"],
        "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)), "errors": stats["errors"], "lost": stats["lost"],
        "mixed_up": stats["mixed"], "checked_distinguishing": stats["distinguishing"], "wall_s": stats["wall_s"],
    }


def table(rows: list[dict]) -> str:
    head = "| server | requests ok | req/s | p50 ms | p95 ms | p99 ms | errors | lost | mixed up | start-up s |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        errors = sum(r["errors"].values())
        lines.append(f"| {r['server']} | {r['requests_ok']} | {r['req_per_s']:.1f} | {r['p50_ms']:.0f} | "
                     f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {errors} | {r['lost']} | {r['mixed_up']} | "
                     f"{r.get('startup_s', float('nan')):.0f} |")
    return "\n".join(lines)


def _parse(value: str) -> tuple[str, Path]:
    name, _, path = value.partition("=")
    return name, Path(path).expanduser().resolve()


SERVER_NAMES = {"adaptlab": "adaptlab serve (adapters resident, micro-batched)",
                "naive": "naive (adapter loaded per request, no batching)"}


def measure(kind: str, args: argparse.Namespace, adapters: dict[str, Path], models: list[str], texts: list[str],
            work: Path) -> dict:
    """Start one server, take its reference answers, load it for --duration seconds, stop it; its summary row."""
    port, started = free_port(), time.perf_counter()
    proc = start_server(kind, args.base, adapters, port, work / f"{kind}.log", args.replicas, args.replica_cpus)
    startup_s = time.perf_counter() - started
    try:
        url = f"http://{HOST}:{port}"
        expected = asyncio.run(expected_answers(url, models, texts))
        stats = asyncio.run(load(url, models, texts, expected, args.clients, args.duration, args.seed))
    finally:
        stop_server(proc)
    name = SERVER_NAMES.get(kind, f"adaptlab serve --replicas {args.replicas} (Ray Serve)")
    row = {**summary(name, stats), "startup_s": startup_s}
    if kind == "replicas":
        row["replicas_answering"] = len(stats["replicas"])
    answered = f", answered by {len(stats['replicas'])} replicas" if stats["replicas"] else ""
    print(f"{kind}: up in {startup_s:.0f} s; {row['requests_ok']} ok, {row['req_per_s']:.1f} req/s, "
          f"p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, "
          f"lost {row['lost']}, mixed up {row['mixed_up']}{answered}")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="minilm", help="Base model for the server and the trained pair.")
    p.add_argument("--adapter", action="append", default=[], help="Extra NAME=PATH adapters (runs, bundles).")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60, help="Seconds of load per server (two servers).")
    p.add_argument("--pair-steps", type=int, default=40, help="Training steps of each adapter of the pair.")
    p.add_argument("--texts", type=int, default=48, help="Distinct request texts.")
    p.add_argument("--no-base", action="store_true", help="Leave the bare base model out of the request mix.")
    p.add_argument("--skip-naive", action="store_true", help="Measure adaptlab serve only.")
    p.add_argument("--replicas", type=int, default=1, help="Above 1: also measure adaptlab serve --replicas N.")
    p.add_argument("--replica-cpus", type=float, default=1.0, help="Ray CPUs per replica (--replicas above 1).")
    p.add_argument("--out", type=Path, help="Write the results as JSON here.")
    p.add_argument("--workdir", type=Path, help="Where the pair and logs go (default: a temporary folder).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--naive-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.naive_server:
        naive_server(args)
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="serve_load-"))
    work.mkdir(parents=True, exist_ok=True)
    adapters = {**train_pair(args.base, work, args.pair_steps), **dict(_parse(a) for a in args.adapter)}
    models = [*adapters, *([] if args.no_base else ["base"])]
    texts = request_texts(args.texts)
    print(f"base {args.base}; models {', '.join(models)}; {args.clients} clients x {args.duration:g} s per server; "
          f"{len(texts)} texts; {os.cpu_count()} CPUs")
    kinds = ["adaptlab", *(["replicas"] if args.replicas > 1 else []), *([] if args.skip_naive else ["naive"])]
    rows = [measure(kind, args, adapters, models, texts, work) for kind in kinds]
    print()
    print(table(rows))
    for other in rows[1:]:
        print(f"\n{other['server']}: x{other['req_per_s'] / max(rows[0]['req_per_s'], 1e-9):.2f} the throughput, "
              f"x{other['p50_ms'] / max(rows[0]['p50_ms'], 1e-9):.2f} the p50 latency of {rows[0]['server']}")
    if args.out:
        args.out.write_text(json.dumps({"base": args.base, "models": models, "clients": args.clients,
                                        "duration_s": args.duration, "cpus": os.cpu_count(),
                                        "replicas": args.replicas, "rows": rows}, indent=2))
    if any(r["lost"] or r["mixed_up"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
