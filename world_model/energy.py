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


FRAME_NORMS = ("l2", "l1", "l2_blur")


def frame_distance(predicted: torch.Tensor, goal: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """The pixel world model's energy: predicted frames (..., 3, r, r) and goal frames (broadcastable), in
    [-0.5, 0.5] -> distance (...). l2 / l1: mean over pixels and channels of the squared / absolute
    difference; l2_blur: l2 after a 4 x 4 average pool of both (forgives a blur or a shift of a pixel or two,
    so that a prediction near the goal scores nearer than one far from it)."""
    if norm not in FRAME_NORMS:
        raise ValueError(f"pixel.energy={norm!r} is invalid; expected one of {list(FRAME_NORMS)}")
    predicted, goal = predicted.float(), goal.float()
    if norm == "l2_blur":
        predicted, goal = blurred(predicted), blurred(goal)  # (..., 3, r / 4, r / 4)
    difference = predicted - goal  # (..., 3, r, r)
    if norm == "l1":
        return difference.abs().mean(dim=(-3, -2, -1))
    return difference.square().mean(dim=(-3, -2, -1))


def blurred(frames: torch.Tensor) -> torch.Tensor:
    """(..., 3, r, r) -> (..., 3, r / p, r / p): p x p average pool, p = 4 (less for frames under 16 px)."""
    size = frames.shape[-1]
    pool = max(1, min(4, size // 4))
    pooled = torch.nn.functional.avg_pool2d(frames.reshape(-1, 3, size, size), pool)  # (M, 3, r / p, r / p)
    return pooled.view(*frames.shape[:-2], *pooled.shape[-2:])
