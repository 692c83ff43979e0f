"""Step-indexed schedules of V-JEPA pretraining: learning rate and EMA momentum."""
from __future__ import annotations

import math


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak_lr: float,
                  start_lr: float, final_lr: float) -> float:
    """Linear warmup start_lr -> peak_lr over `warmup_steps`, then cosine decay to final_lr."""
    if step < warmup_steps:
        return start_lr + (peak_lr - start_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final_lr + 0.5 * (peak_lr - final_lr) * (1.0 + math.cos(math.pi * progress))


def ema_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear ramp of the target encoder's EMA momentum from `start` to `end` over training."""
    return start + (end - start) * min(1.0, step / max(1, total_steps))
