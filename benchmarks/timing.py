"""Shared timing helper of the benchmarks: medians over repeats, after warm-up calls."""
from __future__ import annotations

import statistics
import time

import torch


def wait_for_device() -> None:
    """CUDA kernels run asynchronously: a call's time ends when its kernels are done (as torch.utils.benchmark
    times them), not when they are queued."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_seconds(function, repeats: int, warmup: int = 2) -> float:
    """Median wall-clock seconds of `function()` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        wait_for_device()
        started = time.perf_counter()
        function()
        wait_for_device()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)
