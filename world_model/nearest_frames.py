"""Goal positions from the nearest training frames: a non-parametric position readout.

The trained position readout (world_model/position_readout.py) reads the reacher goal's joint angles with a
held-out median error of ~0.036 rad, and a third of the goals are read farther than the task's 0.05 success
threshold: an agent that settles where the readout says the goal is fails the "held" test there (issue 28). The
frozen encoder places frames far more precisely than that: the training frame whose pooled tokens lie nearest
(l2) to a goal's, averaged with the next `neighbours - 1`, puts the goal within 0.011 rad (median) and 97% of
the goals within 0.05 (docs/experiments.md section 26). This reads the goal's positions that way, from the
training split's latent cache and its recorded qpos:

    reader = NearestFramePositions.from_cache(LatentCache(paths.latents / "train"), readout.angular, neighbours=4)
    goal_positions = reader(goal_tokens (B, N_enc, D))   # (B, positions) in the task's units, angles wrapped

It keeps the cache's tokens in memory (float16: 0.56 GB for the reacher preset's 90,900 frames) and answers
once per goal, so it costs nothing per plan.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from world_model.predictor import pool_token_grid

CHUNK_FRAMES = 16384  # database rows compared at a time, in float32


class NearestFramePositions(nn.Module):
    def __init__(self, tokens: torch.Tensor, positions: torch.Tensor, angular: torch.Tensor, neighbours: int = 4):
        """tokens (M, grid, grid, D) of the training frames, positions (M, P) their qpos entries, angular (P,) bool:
        hinge joints, averaged as wrapped offsets."""
        super().__init__()
        if isinstance(neighbours, bool) or not isinstance(neighbours, int) or not 1 <= neighbours <= len(tokens):
            raise ValueError(f"evaluate.energy.goal_neighbours={neighbours} is invalid; expected an integer in "
                             f"[1, {len(tokens)}] (the training frames)")
        self.grid, self.neighbours = tokens.shape[1], neighbours
        flat = tokens.reshape(len(tokens), -1).to(torch.float16)  # (M, grid * grid * D)
        self.register_buffer("tokens", flat, persistent=False)
        squared_norms = torch.cat([chunk.float().square().sum(-1) for chunk in flat.split(CHUNK_FRAMES)])  # (M,)
        self.register_buffer("squared_norms", squared_norms, persistent=False)
        self.register_buffer("positions", positions.float(), persistent=False)  # (M, P)
        self.register_buffer("angular", angular.bool(), persistent=False)  # (P,)

    @classmethod
    def from_cache(cls, cache, angular: torch.Tensor, neighbours: int = 4) -> "NearestFramePositions":
        """Every frame of a latent cache split; the positions are the leading `len(angular)` qpos entries (the
        proprio's positions, which the position term compares)."""
        tokens = torch.from_numpy(np.array(cache.latents).reshape(-1, *cache.latents.shape[2:]))
        qpos = np.asarray(cache.field("qpos"), dtype=np.float32)  # (E, T+1, nq)
        positions = torch.from_numpy(qpos.reshape(-1, qpos.shape[-1])[:, : len(angular)].copy())  # (M, P)
        return cls(tokens, positions, angular, neighbours)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N_enc, D) or (B, h, w, D) -> positions (B, P) in the task's units (angles wrapped)."""
        queries = pool_token_grid(tokens.float(), self.grid).flatten(1).to(self.tokens.device)  # (B, F)
        best_distances, best_indices = [], []
        with torch.autocast(queries.device.type, enabled=False):  # float32 products: bf16 would blur the nearest
            for start in range(0, len(self.tokens), CHUNK_FRAMES):
                chunk = self.tokens[start : start + CHUNK_FRAMES].float()  # (C, F)
                # the squared l2 distance less the query's own norm, which does not change the order
                distances = self.squared_norms[start : start + CHUNK_FRAMES] - 2 * queries @ chunk.T  # (B, C)
                top = distances.topk(min(self.neighbours, len(chunk)), dim=-1, largest=False)
                best_distances.append(top.values)
                best_indices.append(top.indices + start)
        distances, indices = torch.cat(best_distances, -1), torch.cat(best_indices, -1)  # (B, chunks * k)
        order = distances.topk(self.neighbours, dim=-1, largest=False).indices  # (B, k), nearest first
        neighbours = self.positions[indices.gather(-1, order)]  # (B, k, P)
        offsets = self.wrap_angles(neighbours - neighbours[:, :1])  # around the nearest, so angles average across pi
        return self.wrap_angles(neighbours[:, 0] + offsets.mean(1))  # (B, P)

    def wrap_angles(self, positions: torch.Tensor) -> torch.Tensor:
        """(..., P): the angular entries wrapped to [-pi, pi), the others as they are."""
        return torch.where(self.angular, torch.remainder(positions + math.pi, 2 * math.pi) - math.pi, positions)
