"""How familiar a frame is to the world model: its latent's distance to the nearest of a sample of training
latents, against the distances held-out frames of the same data have.

Frames rendered differently from the training data (another camera angle, shadows on) drop the agent
below random without a word; the latent world warns, once per episode, when a frame lies farther from
every training frame than any of 1000 held-out frames does.

    reference = fit_reference(predictor, train_cache, val_cache)       # saved next to the predictor
    distances = reference.nearest_distance(latents (B, N', D'))       # (B,)
    reference.unfamiliar(latents)                                      # (B,) bool
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bookkeeping.io import atomic_save
from world_model.latent_readout import prepared_frames

REFERENCE_FILE = "reference_latents.safetensors"


class LatentReference:
    def __init__(self, latents: torch.Tensor, threshold: float):
        self.latents = latents.flatten(1).float()  # (R, N'*D')
        self.threshold = float(threshold)

    def nearest_distance(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, N', D') -> (B,): L2 distance to the nearest reference latent."""
        return torch.cdist(latents.flatten(1).float(), self.latents).min(dim=1).values

    def unfamiliar(self, latents: torch.Tensor) -> torch.Tensor:
        return self.nearest_distance(latents) > self.threshold


def fit_reference(predictor, train_cache, val_cache, output_dir: str | Path, seed: int = 0,
                  size: int = 2000) -> LatentReference:
    """`size` random training frames as the reference; the threshold is the largest of 1000 held-out frames'
    nearest distances to them. Saved as `reference_latents.safetensors`."""
    generator = np.random.default_rng(seed)
    predictor = predictor.cpu().eval()
    reference = LatentReference(prepared_frames(predictor, train_cache, size, generator)[0], threshold=0.0)
    held_out = prepared_frames(predictor, val_cache, 1000, generator)[0]
    threshold = float(reference.nearest_distance(held_out).max())
    reference = LatentReference(reference.latents, threshold)
    tensors = {"latents": reference.latents.contiguous(), "threshold": torch.tensor([threshold])}
    atomic_save(Path(output_dir) / REFERENCE_FILE, lambda temp: save_file(tensors, str(temp)))
    return reference


def load_reference(directory: str | Path, device: str | torch.device | None = None) -> LatentReference:
    """The reference saved next to a predictor (FileNotFoundError naming it when it is not there)."""
    path = Path(directory) / REFERENCE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} is missing (the predictor's latent reference); train the predictor "
                                "again with `jepa-agent train`")
    tensors = load_file(str(path))
    return LatentReference(tensors["latents"].to(device or "cpu"), float(tensors["threshold"][0]))
