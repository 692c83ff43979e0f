"""Model predictive path integral (MPPI): refit the sampling Gaussian to softmax-weighted candidates.

Each candidate gets weight proportional to exp(-(energy - min energy) / (temperature * spread)),
where spread is the standard deviation of the env's finite energies this iteration. Dividing by the
spread makes `temperature` unitless, so one default serves energies of any scale (latent distances
differ between encoders): at temperature 0.5 a candidate one spread worse than the best weighs
e^-2 as much. Mean and std are then refit as the weighted mean and std (TD-MPC style), std floored
at `min_std`. Non-finite energies get zero weight.
"""
from __future__ import annotations

import torch

from planners.base import SamplingPlanner


class MPPIPlanner(SamplingPlanner):
    """MPPI over (B, H, D) action sequences; softmax weights at `temperature` (> 0, unitless).

    Every setting of `SamplingPlanner` applies (action_dim, horizon, samples, iterations, init_std, min_std,
    low, high, seed, device).
    """

    def __init__(self, action_dim: int, temperature: float = 0.5, **settings) -> None:
        super().__init__(action_dim, **settings)
        if not temperature > 0:
            raise ValueError(f"temperature={temperature}: expected a float > 0")
        self.temperature = temperature

    def candidate_weights(self, energies: torch.Tensor) -> torch.Tensor:
        """energies (B, S), +inf for non-finite -> softmax weights (B, S); uniform if none is finite."""
        finite = torch.isfinite(energies)  # (B, S)
        finite_count = finite.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        finite_energies = torch.where(finite, energies, torch.zeros_like(energies))  # (B, S)
        average = finite_energies.sum(dim=1, keepdim=True) / finite_count  # (B, 1)
        squared_deviation = torch.where(finite, (energies - average) ** 2, torch.zeros_like(energies))
        spread = (squared_deviation.sum(dim=1, keepdim=True) / finite_count).sqrt()  # (B, 1)
        lowest = energies.min(dim=1, keepdim=True).values  # (B, 1)
        logits = -(energies - lowest) / (self.temperature * spread + 1e-8)  # (B, S), -inf if non-finite
        none_finite = ~finite.any(dim=1, keepdim=True)  # (B, 1)
        logits = torch.where(none_finite, torch.zeros_like(logits), logits)
        return logits.softmax(dim=1)
