"""Training loops the trainers share: a fixed number of steps on a small model, and held-out losses.

`fit_steps` trains the heads that learn from sampled batches (the position and latent readouts, the goal policy)
under the one learning-rate schedule; `held_out_losses` validates both world models (`world_model.train_predictor`
on latent windows, `world_model.train_pixel` on frame windows), each passing its own `window_losses`:

    fit_steps(optimizer, steps, lr, lambda: readout_loss(next_batch()), "train position readout")
    losses = held_out_losses(window_losses, model, val_data, val_windows, train_cfg, device)
    # {"loss": ..., "teacher_forcing": ..., "rollout": ..., "copy_last": ...}
"""
from __future__ import annotations

from typing import Callable

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from world_model.device import bf16_autocast
from world_model.schedules import learning_rate, set_learning_rate


def held_out_losses(window_losses: Callable[..., dict], model: torch.nn.Module, data, windows: torch.Tensor,
                    train_cfg: DictConfig, device) -> dict[str, float]:
    """Each loss of `window_losses(model, *data.batch(chunk, device), rollout_steps, loss)`, averaged over
    `windows` (W, ...) in chunks of `train_cfg.batch_size`, weighted by chunk size; the model in eval mode meanwhile."""
    model.eval()
    totals: dict[str, float] = {}
    with torch.no_grad():
        for start in range(0, len(windows), train_cfg.batch_size):
            chunk = windows[start : start + train_cfg.batch_size]
            with bf16_autocast(device, train_cfg.bf16):
                losses = window_losses(model, *data.batch(chunk, device), train_cfg.rollout_steps, train_cfg.loss)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(chunk)
    model.train()
    return {name: total / len(windows) for name, total in totals.items()}


def fit_steps(optimizer: torch.optim.Optimizer, steps: int, peak_lr: float, batch_loss: Callable[[], torch.Tensor],
              description: str) -> None:
    """`steps` optimiser steps on `batch_loss()` (a scalar, from a fresh batch on each call), the learning rate
    following `schedules.learning_rate` (cosine from `peak_lr` to 0), with a progress bar named `description`."""
    progress = tqdm(range(steps), unit="step", desc=description, dynamic_ncols=True)
    for step in progress:
        set_learning_rate(optimizer, learning_rate(step, steps, peak_lr))
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.4f}")
