"""Training windows: a latent-cache split prepared for the predictor, and batches of windows drawn from it.

A window is episode e, start t (any offset), and the frames t, t + block, ..., t + block * (F - 1) with the
action blocks between them (and the proprio, when the predictor reads it). Used by predictor training
(`world_model.train_predictor`) and the diagnostics (`world_model.diagnostics`):

    data = WindowData(cache, predictor, window_frames=F)
    latents, action_blocks, proprio = data.batch(data.windows[:B], device)
    # (B, F, N, D'), (B, F-1, block*A), (B, F, P) or None
"""
from __future__ import annotations

import numpy as np
import torch

from world_model.latent_cache import LatentCache
from world_model.predictor import Predictor


class WindowData:
    """A cache split prepared for the model (latents pooled + normalised, in memory) and its windows."""

    def __init__(self, cache: LatentCache, model: Predictor, window_frames: int, chunk_episodes: int = 64):
        config = model.config
        self.block, self.window_frames = config.block, window_frames
        span = config.block * (window_frames - 1)
        if span > cache.episode_length:
            raise ValueError(f"episodes of {cache.episode_length} steps are shorter than a training window of "
                             f"{window_frames} frames x block {config.block} ({span} steps)")
        prepared = []
        with torch.no_grad():
            for start in range(0, len(cache), chunk_episodes):
                raw = torch.from_numpy(np.array(cache.latents[start : start + chunk_episodes]))
                prepared.append(model.prepare_latents(raw).to(torch.bfloat16))  # (e, T+1, N, D') compact
        self.latents = torch.cat(prepared)  # (E, T+1, N, D')
        self.actions = torch.from_numpy(np.array(cache.actions, dtype=np.float32))  # (E, T, A)
        self.proprio = None
        if config.proprio_dim:
            self.proprio = model.prepare_proprio(torch.from_numpy(np.array(cache.proprio)))  # (E, T+1, P)
        starts = cache.episode_length - span + 1
        episode_index, start_index = torch.meshgrid(torch.arange(len(cache)), torch.arange(starts), indexing="ij")
        self.windows = torch.stack([episode_index.flatten(), start_index.flatten()], dim=1)  # (W, 2)

    def batch(self, windows: torch.Tensor, device: torch.device):
        """windows (B, 2) of (episode, start) -> latents (B, F, N, D'), action blocks (B, F-1, block*A),
        proprio (B, F, P) | None."""
        episodes, starts = windows[:, :1], windows[:, 1:]
        frame_index = starts + self.block * torch.arange(self.window_frames)  # (B, F)
        action_index = starts + torch.arange(self.block * (self.window_frames - 1))  # (B, block*(F-1))
        latents = self.latents[episodes, frame_index].float()  # (B, F, N, D')
        actions = self.actions[episodes, action_index].flatten(1).view(len(windows), self.window_frames - 1, -1)
        proprio = self.proprio[episodes, frame_index] if self.proprio is not None else None
        return latents.to(device), actions.to(device), proprio.to(device) if proprio is not None else None
