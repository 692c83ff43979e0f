"""Shared timing helper of the benchmarks: medians over repeats, after warm-up calls."""
from __future__ import annotations

import statistics
import time


def median_seconds(function, repeats: int, warmup: int = 2) -> float:
    """Median wall-clock seconds of `function()` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)
