"""Step-indexed schedules: the learning rate of every trainer, and V-JEPA pretraining's EMA momentum."""
from __future__ import annotations

import math


def learning_rate(step: int, total_steps: int, peak_lr: float, final_lr: float = 0.0, warmup_steps: int = 0,
                  start_lr: float | None = None, progress: float | None = None) -> float:
    """The learning rate of step `step` (0-based) of `total_steps`: a linear warmup over the first
    `warmup_steps` steps, then a cosine decay from `peak_lr` to `final_lr`, which it keeps after the end.

    The warmup goes from `start_lr` at step 0 to `peak_lr` at step `warmup_steps`; with `start_lr` None,
    step k - 1 takes k / warmup_steps of `peak_lr` (the peak on the last warmup step). The decay follows
    `progress` (0 -> 1, clipped), by default the fraction of the steps after the warmup done; a trainer
    under a time budget passes its own (train_pixel.py: steps or time, whichever runs out first).
    With the defaults (no warmup, `final_lr` 0) it is torch's CosineAnnealingLR over `total_steps`."""
    if step < warmup_steps:
        if start_lr is None:
            return peak_lr * (step + 1) / warmup_steps
        return start_lr + (peak_lr - start_lr) * step / warmup_steps
    if progress is None:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final_lr + 0.5 * (peak_lr - final_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rate(optimizer, lr: float) -> None:
    """Every parameter group of a torch optimiser to `lr`, before its step."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def ema_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear ramp of the target encoder's EMA momentum from `start` to `end` over training."""
    return start + (end - start) * min(1.0, step / max(1, total_steps))
