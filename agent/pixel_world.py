"""`PixelWorld`: the MPC agent's world for the pixel world model (issue 27), behind agent/worlds.py's `World`.

It keeps the last `context_frames` observed frames (area-downsampled to the model's resolution) and the
blocks executed between them; a planned candidate is rolled out frame by frame by the next-frame generator,
and its energy is the distance between each predicted frame and the goal image (`world_model.energy.
frame_distance`: l2 by default), over the planned blocks by the same `aggregate` as the latent world's.
It reads no states: frames and actions only.
"""
from __future__ import annotations

import numpy as np
import torch

from agent.worlds import aggregate_over_blocks, repeat_last_env
from world_model.compiled_rollout import compile_method
from world_model.device import bf16_autocast
from world_model.energy import frame_distance
from world_model.train_pixel import downsample, model_frames


class PixelWorld:
    """Plans in pixel space with a trained `world_model.pixel_model.PixelWorldModel`."""

    state_dim = None  # reads no states

    def __init__(self, model, norm: str = "l2", aggregate: str = "last", image_size: int | None = None,
                 autocast_bf16: bool = False, chunk_size: int = 1024, compile: bool = False):
        """`image_size`: the side of the env's frames (the run's); `chunk_size`: rollouts per model call;
        `compile`: torch.compile each model call with its distances (`chunk_distances`), as the latent world does
        (evaluate.compile), every call padded to one shape."""
        aggregate_over_blocks(torch.zeros(1, 1), aggregate)  # validate early
        frame_distance(torch.zeros(1, 3, 1, 1), torch.zeros(1, 3, 1, 1), norm)
        self.model, self.norm, self.aggregate = model, norm, aggregate
        self.image_size, self.autocast_bf16, self.chunk_size = image_size, autocast_bf16, chunk_size
        self.device = next(model.parameters()).device
        self.compiled = bool(compile)
        if compile:
            compile_method(self, "chunk_distances")
        self.resolution, self.context_frames = model.config.image_size, model.config.context_frames
        self.goal_frames: torch.Tensor | None = None  # (B, 3, r, r)
        self.context: list[torch.Tensor] = []  # C of (B, 3, r, r)
        self.context_actions: list[torch.Tensor] = []  # C - 1 of (B, block*A)

    def check_frames(self, images: np.ndarray) -> None:
        size = tuple(np.shape(images)[1:3])
        if self.image_size is not None and size != (self.image_size, self.image_size):
            raise ValueError(f"frames of {size[0]} x {size[1]} px are invalid for this run; expected "
                             f"{self.image_size} x {self.image_size} (env.image_size={self.image_size})")

    def frames(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> model frames (B, 3, r, r) on the model's device."""
        self.check_frames(images)
        return model_frames(downsample(np.ascontiguousarray(images), self.resolution)).to(self.device)

    def set_goal(self, goal_images: np.ndarray, goal_states: np.ndarray | None = None) -> None:
        self.goal_frames = self.frames(goal_images)
        self.context, self.context_actions = [], []

    def observe(self, pixels: np.ndarray, states=None, executed_block: np.ndarray | None = None) -> None:
        if executed_block is not None and self.context:
            self.context_actions.append(torch.as_tensor(executed_block, dtype=torch.float32, device=self.device))
        self.context = [*self.context, self.frames(pixels)][-self.context_frames :]
        self.context_actions = self.context_actions[len(self.context_actions) - (len(self.context) - 1) :]

    def _autocast(self):
        return bf16_autocast(self.device, self.autocast_bf16)

    def chunk_distances(self, actions: torch.Tensor, context: torch.Tensor, context_actions: torch.Tensor | None,
                        goal: torch.Tensor) -> torch.Tensor:
        """One model call's distances per planned block, for E envs of K candidates each: actions (E*K, H, block*A),
        context (E, C, 3, r, r), context_actions (E, C-1, block*A) | None, goal (E, 3, r, r) -> (E*K, H). Under
        `compile` this whole method is one graph."""
        samples = actions.shape[0] // context.shape[0]
        with self._autocast():  # an env's context runs once for its K candidates
            predicted = self.model.rollout(context, actions, context_actions)  # (E*K, H, 3, r, r)
        flat_goal = goal.repeat_interleave(samples, dim=0)[:, None]  # (E*K, 1, 3, r, r)
        return frame_distance(predicted, flat_goal, self.norm)

    @torch.no_grad()
    def energy_fn(self, blocks: int | None = None):
        context = torch.stack(self.context, dim=1)  # (B, C, 3, r, r)
        context_actions = torch.stack(self.context_actions, dim=1) if self.context_actions else None  # (B, C-1, bA)
        goal = self.goal_frames  # (B, 3, r, r)

        @torch.no_grad()
        def energy(actions: torch.Tensor) -> torch.Tensor:
            actions = actions[:, :, :blocks].to(self.device)  # (B, K, H', block*A)
            batch, samples, horizon, _ = actions.shape
            calls = -(-batch // max(1, self.chunk_size // samples))  # model calls of whole envs
            chunk_envs = -(-batch // calls)  # as even as can be
            padded = calls * chunk_envs if self.compiled else batch  # compiled: every call one shape
            padded_context, padded_context_actions, padded_goal, padded_actions = (
                None if tensor is None else repeat_last_env(tensor, padded)
                for tensor in (context, context_actions, goal, actions))
            distances = []
            for start in range(0, padded, chunk_envs):
                envs = slice(start, start + chunk_envs)
                distances.append(self.chunk_distances(
                    padded_actions[envs].flatten(0, 1), padded_context[envs],
                    None if padded_context_actions is None else padded_context_actions[envs], padded_goal[envs],
                ))  # (chunk*K, H')
            per_block = torch.cat(distances).view(padded, samples, horizon)[:batch]  # (B, K, H')
            return aggregate_over_blocks(per_block, self.aggregate)

        return energy
