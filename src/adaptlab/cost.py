"""What a rung costs: parameters, memory, time, throughput, size on disk, latency.

Peak memory on CPU is the process's resident set size sampled every 10 ms while the rung trains (reported as the
peak and as the increase over the size at the rung's start); on CUDA it is torch's peak allocated memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil


@dataclass
class Meter:
    seconds: float = 0.0
    start_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    cuda_peak_mb: float | None = None

    @property
    def peak_increase_mb(self) -> float:
        return max(0.0, self.peak_rss_mb - self.start_rss_mb)


@contextmanager
def measure(interval: float = 0.01) -> Iterator[Meter]:
    """Wall time and peak memory of the enclosed block."""
    import torch

    proc = psutil.Process()
    meter = Meter(start_rss_mb=proc.memory_info().rss / 2**20)
    meter.peak_rss_mb = meter.start_rss_mb
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            meter.peak_rss_mb = max(meter.peak_rss_mb, proc.memory_info().rss / 2**20)
            stop.wait(interval)

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield meter
    finally:
        meter.seconds = time.perf_counter() - start
        stop.set()
        thread.join()
        meter.peak_rss_mb = max(meter.peak_rss_mb, proc.memory_info().rss / 2**20)
        if cuda:
            meter.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20


def release_memory() -> None:
    """Free what earlier rungs left: collect garbage, then (glibc) hand freed heap pages back to the system, so a
    rung's peak memory is its own, not raised by what the rungs before it fragmented."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl): nothing to trim
        pass


def latency_ms(predict_one: Callable[[int], object], n: int, warmup: int = 3) -> dict[str, float]:
    """p50/p95 wall time of ``predict_one(i)`` for i in range(n), one example at a time, after warm-up calls."""
    for i in range(min(warmup, n)):
        predict_one(i)
    times = []
    for i in range(n):
        start = time.perf_counter()
        predict_one(i)
        times.append((time.perf_counter() - start) * 1000)
    return {
        "latency_ms_p50": float(np.percentile(times, 50)) if times else 0.0,
        "latency_ms_p95": float(np.percentile(times, 95)) if times else 0.0,
    }


def dir_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def cost_summary(
    *, trainable: int, total: int, meter: Meter, samples: int, tokens: int | None, size_bytes: int, latency: dict
) -> dict[str, float | int | None]:
    seconds = meter.seconds
    return {
        "trainable_params": int(trainable),
        "total_params": int(total),
        "trainable_pct": round(100.0 * trainable / total, 4) if total else 0.0,
        "train_seconds": round(seconds, 3),
        "train_samples_per_second": round(samples / seconds, 2) if seconds > 0 and samples else None,
        "train_tokens_per_second": round(tokens / seconds, 1) if seconds > 0 and tokens else None,
        "peak_memory_mb": round(meter.cuda_peak_mb if meter.cuda_peak_mb is not None else meter.peak_rss_mb, 1),
        "peak_memory_increase_mb": round(meter.peak_increase_mb, 1),
        "size_on_disk_bytes": int(size_bytes),
        **{k: round(v, 3) for k, v in latency.items()},
    }
