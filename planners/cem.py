"""Cross-entropy method (CEM): refit the sampling Gaussian to the top-k candidates each iteration.

Defaults follow DINO-WM's planner: 300 samples x 30 iterations, top 30 elites, horizon 5 blocks.
"""
from __future__ import annotations

import torch

from planners.base import SamplingPlanner


class CEMPlanner(SamplingPlanner):
    """CEM over (B, H, D) action sequences; `top_k` elites get equal weight, the rest none.

    Every setting of `SamplingPlanner` applies (action_dim, horizon, samples, iterations, init_std, min_std,
    low, high, seed, device); top_k must lie in [1, samples].
    """

    def __init__(self, action_dim: int, top_k: int = 30, samples: int = 300, **settings) -> None:
        super().__init__(action_dim, samples=samples, **settings)
        if not 1 <= top_k <= samples:
            raise ValueError(f"top_k={top_k}: expected an integer in [1, samples={samples}]")
        self.top_k = top_k

    def candidate_weights(self, energies: torch.Tensor) -> torch.Tensor:
        """energies (B, S) -> weights (B, S): 1 / top_k on the top_k lowest energies, 0 elsewhere."""
        elite_index = energies.topk(self.top_k, dim=1, largest=False).indices  # (B, top_k)
        weights = torch.zeros_like(energies)
        return weights.scatter_(1, elite_index, 1.0 / self.top_k)
