"""Position readout: the goal's joint positions read from its frozen encoder tokens.

Where the robot is small in the frame (the point mass is 3 px wide at 96 px), the latent distance is
flat: every frame without the mass on the goal is about equally far from the goal's latent, so the
planner gets no signal until a candidate lands on the goal by chance (docs/experiments.md section
9). The predictor also predicts the proprio (qpos, qvel); if the goal's qpos were known, the energy
could measure how far a candidate ends from it. The goal is only an image, so this module reads the
qpos from the goal image's encoder tokens, a frozen-feature probe in the V-JEPA sense.

A spatial soft-argmax over the token grid: a shared MLP scores every token (with a learned position
embedding) for each of `points` keypoints and proposes an offset within it; the softmax over tokens
weights the token centres plus offsets into an image point per keypoint, and a linear (or MLP) head
maps those points and the weighted token features to qpos. With `grid_channels` > 0 it keeps the whole grid
instead: every token's features, reduced to that many channels, flattened into an MLP head (the cube: a small
object that an 8 x 8 grid localises better whole than through one soft-argmax point). Slide joints (the
point mass) are regressed in standardised units; hinge joints (`angles`, per position or one flag for all:
the reacher's freely turning shoulder) as (sin, cos), so that an image, which cannot show how often a joint
has turned, maps to one answer in [-pi, pi).
Trained on the latent cache (`jepa-agent train` when `predictor.readout.steps > 0`), saved next to
the predictor:

    readout = PositionReadout(ReadoutConfig(grid=8, token_dim=192, positions=2))
    qpos = readout(tokens (B, grid, grid, D))   # (B, positions), in the task's units (angles wrapped)

`predictor.readout.qpos_indices` reads chosen qpos entries instead of the leading ones (the cube's x, y, z: the
goal policy's view of the cube; such a readout is not the energy's position term, which needs the proprio's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F

from bookkeeping.checks import angular_position_mask
from bookkeeping.io import load_module, save_module
from world_model.fitting import fit_steps
from world_model.predictor import pool_token_grid

WEIGHTS_FILE = "position_readout.safetensors"
META_FILE = "position_readout.json"


@dataclass(frozen=True)
class ReadoutConfig:
    grid: int          # the token grid side it reads (the latent cache's grid)
    token_dim: int     # D
    positions: int     # the qpos entries it predicts: the leading `positions` (nq), or those of `qpos_indices`
    hidden: int = 256
    points: int = 1    # soft-argmax keypoints (one finds the point mass; the two-link arm needs more)
    mlp_head: bool = False  # an MLP head instead of a linear one (the arm's angles: yes; the mass's x, y: no)
    angles: bool | tuple[bool, ...] = False  # hinge joints: read as (sin, cos), returned wrapped to [-pi, pi)
    qpos_indices: tuple[int, ...] | None = None  # the qpos entries read (None: the leading `positions`)
    grid_channels: int = 0  # > 0: the whole token grid, this many channels per token, into an MLP head (no keypoints)

    def __post_init__(self):  # one flag for every position, or one per position -> a tuple of `positions` flags
        object.__setattr__(self, "angles", angular_position_mask(self.angles, self.positions))
        if self.qpos_indices is not None:
            object.__setattr__(self, "qpos_indices", tuple(int(index) for index in self.qpos_indices))
            if len(self.qpos_indices) != self.positions:
                raise ValueError(f"a position readout of qpos_indices={list(self.qpos_indices)} reads "
                                 f"{len(self.qpos_indices)} positions, not positions={self.positions}")


class PositionReadout(nn.Module):
    def __init__(self, config: ReadoutConfig):
        super().__init__()
        self.config = config
        tokens, side = config.grid * config.grid, config.grid
        self.register_buffer("token_mean", torch.zeros(config.token_dim))
        self.register_buffer("token_std", torch.ones(config.token_dim))
        self.register_buffer("position_mean", torch.zeros(config.positions))
        self.register_buffer("position_std", torch.ones(config.positions))
        rows, columns = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
        self.register_buffer("centres", torch.stack([columns.flatten(), rows.flatten()], dim=-1))  # (N, 2)
        self.token_position = nn.Parameter(torch.zeros(tokens, config.token_dim))
        self.token_mlp = nn.Sequential(nn.Linear(config.token_dim, config.hidden), nn.GELU(),
                                       nn.Linear(config.hidden, config.hidden), nn.GELU())
        self.register_buffer("angular", torch.tensor(config.angles), persistent=False)  # (positions,) bool
        outputs = config.positions + sum(config.angles)  # linear positions, then the sines and cosines of the angles
        if config.grid_channels:
            self.reduce = nn.Linear(config.hidden, config.grid_channels)
            inputs = tokens * config.grid_channels
        else:
            self.score_and_offset = nn.Linear(config.hidden, 3 * config.points)
            inputs = config.points * (2 + config.hidden)
        self.head = (nn.Sequential(nn.Linear(inputs, config.hidden), nn.GELU(), nn.Linear(config.hidden, outputs))
                     if config.mlp_head or config.grid_channels else nn.Linear(inputs, outputs))

    def fit_normalisation(self, tokens: torch.Tensor, positions: torch.Tensor) -> None:
        """tokens (M, grid, grid, D) and positions (M, positions) of training frames."""
        self.token_mean.copy_(tokens.float().mean(dim=(0, 1, 2)))
        self.token_std.copy_(tokens.float().std(dim=(0, 1, 2)).clamp_min(1e-3))
        linear = ~self.angular  # angles are read as (sin, cos): their mean and std stay 0 and 1
        self.position_mean.copy_(torch.where(linear, positions.float().mean(0), 0.0))
        self.position_std.copy_(torch.where(linear, positions.float().std(0).clamp_min(1e-6), 1.0))

    def targets(self, positions: torch.Tensor) -> torch.Tensor:
        """qpos (B, positions) -> what the network outputs (B, positions + angles): the linear positions
        standardised, then the angles' sines, then their cosines."""
        linear, angles = positions[:, ~self.angular], positions[:, self.angular]
        standardised = (linear - self.position_mean[~self.angular]) / self.position_std[~self.angular]
        return torch.cat([standardised, angles.sin(), angles.cos()], dim=-1)

    def outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, grid, grid, D) -> network outputs (B, positions + angles), see `targets`."""
        tokens = ((tokens.float() - self.token_mean) / self.token_std).flatten(1, 2)  # (B, N, D)
        features = self.token_mlp(tokens + self.token_position)  # (B, N, hidden)
        if self.config.grid_channels:
            return self.head(F.gelu(self.reduce(features)).flatten(1))  # (B, N * grid_channels) -> outputs
        batch, count = features.shape[:2]
        score_and_offset = self.score_and_offset(features).view(batch, count, self.config.points, 3)  # (B, N, K, 3)
        weights = score_and_offset[..., 0].softmax(dim=1).unsqueeze(-1)  # (B, N, K, 1), over tokens
        points = self.centres[:, None] + score_and_offset[..., 1:] / self.config.grid  # (B, N, K, 2) image coordinates
        point = (weights * points).sum(1)  # (B, K, 2)
        point_features = (weights * features[:, :, None]).sum(1)  # (B, K, hidden)
        return self.head(torch.cat([point, point_features], dim=-1).flatten(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N_enc, D) or (B, h, w, D) -> positions (B, positions) in the task's units."""
        outputs = self.outputs(pool_token_grid(tokens, self.config.grid))  # (B, positions + angles)
        angle_count = sum(self.config.angles)
        linear_count = self.config.positions - angle_count
        standardised, sines, cosines = outputs.split([linear_count, angle_count, angle_count], dim=-1)
        positions = outputs.new_empty(outputs.shape[0], self.config.positions)  # (B, positions)
        linear = ~self.angular
        positions[:, linear] = standardised * self.position_std[linear] + self.position_mean[linear]
        positions[:, self.angular] = torch.atan2(sines, cosines)
        return positions

    def position_error(self, positions: torch.Tensor, goal_positions: torch.Tensor) -> torch.Tensor:
        """Per-joint difference (..., positions), angles wrapped to [-pi, pi)."""
        difference = positions - goal_positions
        wrapped = torch.remainder(difference + math.pi, 2 * math.pi) - math.pi
        return torch.where(self.angular, wrapped, difference)


def random_frames(cache, count: int, generator: np.random.Generator):
    """`count` random frames of a latent cache -> tokens (count, n, n, D), qpos (count, nq)."""
    episodes = generator.integers(0, len(cache), count)
    steps = generator.integers(0, cache.latents.shape[1], count)
    order = np.lexsort((steps, episodes))  # sorted reads from the memory map
    episodes, steps = episodes[order], steps[order]
    tokens = torch.from_numpy(np.asarray(cache.latents[episodes, steps], dtype=np.float32))
    positions = torch.from_numpy(np.asarray(cache.field("qpos")[episodes, steps], dtype=np.float32))
    return tokens, positions


def train_position_readout(readout_cfg: DictConfig, train_cache, val_cache, output_dir: str | Path,
                           seed: int = 0, encoder_fingerprint: str | None = None,
                           angles: bool | tuple[bool, ...] = False) -> dict:
    """Fit a readout of qpos from the cache's token grid (`angles`: the joints are hinges); save it in
    `output_dir` (with the fingerprint of the encoder whose tokens it reads); return its metrics
    (held-out median and 90th-percentile error, the norm over the positions in the task's units, angles
    wrapped; and each position's median error)."""
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    nq = int(train_cache.field("qpos").shape[-1])
    indices = readout_cfg.qpos_indices
    if indices is not None:
        indices = [int(index) for index in indices]
        if not indices or not all(0 <= index < nq for index in indices):
            raise ValueError(f"predictor.readout.qpos_indices={indices} is invalid; expected null or indices in "
                             f"[0, {nq})")
        angles = tuple(angular_position_mask(angles, nq)[index] for index in indices)
    chosen = list(range(nq)) if indices is None else indices  # the qpos columns it reads

    def frames(cache, count):  # tokens (count, n, n, D), the chosen qpos (count, positions)
        tokens, qpos = random_frames(cache, count, generator)
        return tokens, qpos[:, chosen]

    readout = PositionReadout(ReadoutConfig(train_cache.grid, train_cache.dim, len(chosen), int(readout_cfg.hidden),
                                            int(readout_cfg.points), bool(readout_cfg.mlp_head), angles,
                                            None if indices is None else tuple(indices),
                                            int(readout_cfg.grid_channels)))
    readout.fit_normalisation(*frames(train_cache, 20000))
    val_tokens, val_positions = frames(val_cache, int(readout_cfg.val_frames))
    optimizer = torch.optim.AdamW(readout.parameters(), lr=float(readout_cfg.lr), weight_decay=1e-4)
    steps = int(readout_cfg.steps)

    def batch_loss() -> torch.Tensor:
        tokens, targets = frames(train_cache, int(readout_cfg.batch_size))
        return (readout.outputs(tokens) - readout.targets(targets)).square().mean()

    fit_steps(optimizer, steps, float(readout_cfg.lr), batch_loss, "train position readout")
    readout.eval()
    with torch.no_grad():
        position_errors = readout.position_error(readout(val_tokens), val_positions)  # (M, nq)
    errors = position_errors.norm(dim=-1)  # (M,)
    per_position = position_errors.abs().median(dim=0).values  # (nq,): each in its own unit (m or rad)
    metrics = {"val_frames": len(errors), "val_median_error": float(errors.median()),
               "val_p90_error": float(errors.quantile(0.9)),
               "val_median_error_per_position": [float(value) for value in per_position],
               "steps": steps, "encoder_fingerprint": encoder_fingerprint}
    save_position_readout(readout, output_dir, metrics)
    print(f"position readout: held-out error median {metrics['val_median_error']:.4f}, "
          f"90th percentile {metrics['val_p90_error']:.4f} (norm over positions, task units); per position "
          f"{', '.join(f'{value:.4f}' for value in per_position)}")
    return metrics


def save_position_readout(readout: PositionReadout, directory: str | Path, metrics: dict) -> None:
    save_module(readout, directory, WEIGHTS_FILE, META_FILE, metrics)


def load_position_readout(directory: str | Path, device: str | torch.device | None = None,
                          encoder_fingerprint: str | None = None) -> PositionReadout:
    """The readout saved next to a predictor (safetensors: loading runs no code from the file); with
    `encoder_fingerprint`, one trained on another encoder's tokens is refused."""

    def same_encoder(meta: dict) -> None:
        trained_on = meta.get("encoder_fingerprint")
        if encoder_fingerprint and trained_on and trained_on != encoder_fingerprint:
            raise ValueError(f"position readout in {str(directory)!r} reads tokens of encoder {trained_on[:16]}, not "
                             f"of the current encoder {encoder_fingerprint[:16]}; retrain it with `jepa-agent train`")

    readout, _ = load_module(directory, WEIGHTS_FILE, META_FILE,
                             lambda config: PositionReadout(ReadoutConfig(**config)),
                             "position readout", "train one with `jepa-agent train predictor.readout.steps=4000`, or "
                             "set evaluate.energy.position_weight=0",
                             "retrain it with `jepa-agent train run.overwrite=true`", device, same_encoder)
    return readout
