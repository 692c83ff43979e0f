"""Latent distance: the planning energy and the diagnostics' error measure.

Both operate on prepared predictor latents (pooled, projected, layer-normed by
`Predictor.prepare_latents`), so the distance means the same thing everywhere:

    l2: mean over tokens and channels of the squared difference (per-token squared L2 / D)
    l1: mean over tokens and channels of the absolute difference (per-token L1 / D)

Dividing by D keeps the scale independent of the latent width; on layer-normed latents the l2
distance between unrelated latents is about 2 and the training loss (`l1` / `l2`) is the same number.
"""
from __future__ import annotations

import torch

NORMS = ("l2", "l1")


def latent_distance(predicted: torch.Tensor, goal: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """predicted (..., N, D) and goal (..., N, D) (broadcastable) -> distance (...)."""
    difference = predicted.float() - goal.float()  # (..., N, D)
    if norm == "l2":
        return difference.square().mean(dim=(-2, -1))
    if norm == "l1":
        return difference.abs().mean(dim=(-2, -1))
    raise ValueError(f"latent distance norm={norm!r} is invalid; expected one of {list(NORMS)}")
