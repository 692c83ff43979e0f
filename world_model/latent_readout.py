"""Latent readout: chosen qpos (the cube's position) read from the predictor's own latents.

The predictor predicts latents and the proprio, and the proprio of a manipulator is the arm alone:
nothing it predicts says where the object went. A small MLP maps a prepared latent (the predictor's
space: pooled, projected, layer-normed; `Predictor.prepare_latents`) to chosen qpos entries. The same
map reads the goal image's latent and the predicted latents, so the energy can add how far the
predicted object ends from the goal's object, both read from images only:

    readout = LatentReadout(LatentReadoutConfig(latent_dim=N' * D', qpos_indices=(14, 15, 16)))
    positions = readout(latents (..., N', D'))   # (..., len(qpos_indices)), in the task's units

Trained on the latent cache after the predictor (`jepa-agent train` when `predictor.latent_readout.steps
> 0`), saved next to it; `evaluate.energy.latent_readout_weight` uses it. Both are off by default
(configs/predictor/default.yaml, configs/evaluate/default.yaml); the cube preset sets them:

    predictor.latent_readout: {steps: 2000, qpos_indices: [14, 15, 16]}   # + batch_size, lr, hidden, val_frames
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from bookkeeping.io import load_module, save_module
from world_model.fitting import fit_steps

SETTINGS = ("steps", "qpos_indices", "batch_size", "lr", "hidden", "val_frames")  # predictor.latent_readout's keys
WEIGHTS_FILE = "latent_readout.safetensors"
META_FILE = "latent_readout.json"


@dataclass(frozen=True)
class LatentReadoutConfig:
    latent_dim: int                 # N' * D' of one prepared frame
    qpos_indices: tuple[int, ...]   # the qpos entries it reads (the cube's x, y, z: 14, 15, 16)
    hidden: int = 256

    def __post_init__(self):
        object.__setattr__(self, "qpos_indices", tuple(int(index) for index in self.qpos_indices))


class LatentReadout(nn.Module):
    def __init__(self, config: LatentReadoutConfig):
        super().__init__()
        self.config = config
        count = len(config.qpos_indices)
        self.mlp = nn.Sequential(nn.Linear(config.latent_dim, config.hidden), nn.GELU(),
                                 nn.Linear(config.hidden, config.hidden), nn.GELU(), nn.Linear(config.hidden, count))
        self.register_buffer("mean", torch.zeros(count))
        self.register_buffer("std", torch.ones(count))

    def standardised(self, latents: torch.Tensor) -> torch.Tensor:
        """(..., N', D') -> (..., positions) in units of the training positions' std."""
        return self.mlp(latents.flatten(-2).float())

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(..., N', D') -> (..., positions) in the task's units."""
        return self.standardised(latents) * self.std + self.mean


def prepared_frames(predictor, cache, count: int, generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` random frames of a latent cache -> prepared latents (count, N', D'), qpos (count, nq)."""
    episodes = generator.integers(0, len(cache), count)
    steps = generator.integers(0, cache.latents.shape[1], count)
    order = np.lexsort((steps, episodes))  # sorted reads from the memory map
    episodes, steps = episodes[order], steps[order]
    tokens = torch.tensor(np.asarray(cache.latents[episodes, steps], dtype=np.float32))  # (count, n, n, D)
    with torch.no_grad():
        latents = predictor.prepare_latents(tokens[:, None])[:, 0]  # (count, N', D')
    return latents, torch.tensor(np.asarray(cache.field("qpos")[episodes, steps], dtype=np.float32))


def train_latent_readout(settings: DictConfig, predictor, train_cache, val_cache, output_dir: str | Path,
                         seed: int = 0) -> dict:
    """Fit the readout of `settings.qpos_indices` on prepared cache latents; save it in `output_dir`; return
    its held-out median error per position (task units)."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"predictor.latent_readout has unknown keys {unknown}; expected {', '.join(SETTINGS)}")
    nq = int(train_cache.field("qpos").shape[-1])
    indices = [int(index) for index in settings.qpos_indices]
    if not indices or not all(0 <= index < nq for index in indices):
        raise ValueError(f"predictor.latent_readout.qpos_indices={indices} is invalid; expected indices in [0, {nq})")
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    predictor = predictor.cpu().eval()
    latents, positions = prepared_frames(predictor, train_cache, 20000, generator)
    targets = positions[:, indices]
    readout = LatentReadout(LatentReadoutConfig(latents[0].numel(), tuple(indices), int(settings.hidden)))
    readout.mean.copy_(targets.mean(0))
    readout.std.copy_(targets.std(0).clamp_min(1e-6))
    val_latents, val_positions = prepared_frames(predictor, val_cache, int(settings.val_frames), generator)
    optimizer = torch.optim.AdamW(readout.parameters(), lr=float(settings.lr), weight_decay=1e-4)
    steps = int(settings.steps)

    def batch_loss() -> torch.Tensor:
        batch = torch.from_numpy(generator.integers(0, len(latents), int(settings.batch_size)))
        return (readout.standardised(latents[batch]) - (targets[batch] - readout.mean) / readout.std).square().mean()

    fit_steps(optimizer, steps, float(settings.lr), batch_loss, "train latent readout")
    readout.eval()
    with torch.no_grad():
        errors = (readout(val_latents) - val_positions[:, indices]).abs()  # (M, positions)
    metrics = {"val_frames": len(errors), "val_median_error_per_position": errors.median(0).values.tolist(),
               "val_median_error": float(errors.norm(dim=-1).median()), "steps": steps}
    save_latent_readout(readout, output_dir, metrics)
    print(f"latent readout of qpos {indices}: held-out median error {metrics['val_median_error']:.4f} "
          "(norm, task units)")
    return metrics


def save_latent_readout(readout: LatentReadout, directory: str | Path, metrics: dict) -> None:
    save_module(readout, directory, WEIGHTS_FILE, META_FILE, metrics)


def load_latent_readout(directory: str | Path, device: str | torch.device | None = None) -> LatentReadout:
    """The latent readout saved next to a predictor (safetensors: loading runs no code from the file)."""
    readout, _ = load_module(directory, WEIGHTS_FILE, META_FILE,
                             lambda config: LatentReadout(LatentReadoutConfig(**config)), "latent readout",
                             "train one with `jepa-agent train predictor.latent_readout.steps=2000`, or set "
                             "evaluate.energy.latent_readout_weight=0",
                             "retrain it with `jepa-agent train run.overwrite=true`", device)
    return readout
