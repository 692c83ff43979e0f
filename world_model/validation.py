"""Held-out losses of a trainer: its per-batch losses averaged over every validation window.

Both world models validate this way (`world_model.train_predictor` on latent windows, `world_model.train_pixel`
on frame windows); each passes its own `window_losses` and window data:

    losses = held_out_losses(window_losses, model, val_data, val_windows, train_cfg, device)
    # {"loss": ..., "teacher_forcing": ..., "rollout": ..., "copy_last": ...}
"""
from __future__ import annotations

from typing import Callable

import torch
from omegaconf import DictConfig

from world_model.device import bf16_autocast


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
