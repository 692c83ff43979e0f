"""Summary statistics for evaluation metrics."""
from __future__ import annotations

import numpy as np


def bootstrap_interval(successes, samples: int = 10000, confidence: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the mean of 0/1 outcomes over episodes: [low, high]."""
    values = np.asarray(successes, dtype=np.float64)
    if values.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (samples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def latency_summary(latencies) -> dict[str, float]:
    values = np.asarray(latencies, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    return {"count": int(values.size), "mean_s": float(values.mean()), "p50_s": float(np.percentile(values, 50)),
            "p95_s": float(np.percentile(values, 95))}
