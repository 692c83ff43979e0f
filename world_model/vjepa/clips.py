"""Random clips of consecutive frames cut from episodes, the unit of V-JEPA pretraining, and V-JEPA's
random resized crop of them."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional


class ClipSampler:
    """Samples uint8 clips (B, F, H, W, 3) of F consecutive frames from episode frames (E, T+1, H, W, 3).

    A `static_fraction` of the sampled clips instead repeat one frame of the clip F times: a still
    image as a video, the way V-JEPA 2 mixes images into its pretraining and the way the planner
    embeds a single observation or goal image.
    `frames` may be a memory-mapped array; only the sampled clips are read. Sampling draws from a
    `torch.Generator`, so a checkpointed generator state resumes the exact same stream of clips.
    """

    def __init__(self, frames: np.ndarray, clip_frames: int, static_fraction: float = 0.0):
        if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"episode frames must be uint8 (E, T+1, H, W, 3), got {frames.dtype} {frames.shape}")
        if not 1 <= clip_frames <= frames.shape[1]:
            raise ValueError(f"clip_frames={clip_frames} must be between 1 and the episode length "
                             f"in frames ({frames.shape[1]})")
        if not 0.0 <= static_fraction <= 1.0:
            raise ValueError(f"static_fraction={static_fraction} must be between 0 and 1")
        self.frames = frames
        self.clip_frames = clip_frames
        self.static_fraction = static_fraction

    @property
    def num_clips(self) -> int:
        """Number of distinct clips (episode, start) in the data."""
        episodes, length = self.frames.shape[:2]
        return episodes * (length - self.clip_frames + 1)

    def clip(self, index: int) -> np.ndarray:
        """The clip with flat index `index` (episode-major), uint8 (F, H, W, 3)."""
        starts = self.frames.shape[1] - self.clip_frames + 1
        episode, start = divmod(index, starts)
        return np.asarray(self.frames[episode, start:start + self.clip_frames])

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """uint8 (B, F, H, W, 3) clips drawn uniformly with replacement, a `static_fraction` of them still."""
        indices = torch.randint(self.num_clips, (batch_size,), generator=generator).tolist()
        clips = np.stack([self.clip(index) for index in indices])  # (B, F, H, W, 3)
        if self.static_fraction > 0:  # draws nothing more otherwise, so the stream of moving clips is unchanged
            still = (torch.rand(batch_size, generator=generator) < self.static_fraction).numpy()  # (B,)
            shown = torch.randint(self.clip_frames, (batch_size,), generator=generator).numpy()  # (B,)
            rows = np.flatnonzero(still)
            clips[rows] = clips[rows, shown[rows]][:, None]  # (S, 1, H, W, 3) broadcast over the F frames
        return torch.from_numpy(clips)

    def fixed(self, count: int, seed: int) -> torch.Tensor:
        """A reproducible set of `count` distinct clips (fewer if the data has fewer), for validation."""
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(self.num_clips, generator=generator)[:count].sort().values.tolist()
        return torch.from_numpy(np.stack([self.clip(index) for index in indices]))


def random_resized_crop(pixels: torch.Tensor, scale: tuple[float, float], aspect_ratio: tuple[float, float],
                        generator: torch.Generator) -> torch.Tensor:
    """V-JEPA's video augmentation: per clip one crop, the same through all its frames, covering a
    `scale` share of the image area with width/height in `aspect_ratio`, resized back to the full size.
    pixels (B, F, C, S, S) float -> (B, F, C, S, S)."""
    batch = len(pixels)
    area = torch.empty(batch).uniform_(scale[0], scale[1], generator=generator)  # (B,)
    ratio = torch.empty(batch).uniform_(math.log(aspect_ratio[0]), math.log(aspect_ratio[1]),
                                        generator=generator).exp()  # (B,)
    width, height = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)  # of the side
    centre_x = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - width)  # crop inside the image
    centre_y = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - height)
    theta = torch.zeros(batch, 2, 3)  # output [-1, 1] coordinates -> input coordinates
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width, centre_x, height, centre_y
    images = pixels.flatten(1, 2)  # (B, F*C, S, S)
    grid = functional.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return functional.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                                  align_corners=False).view_as(pixels)
