"""The frozen V-JEPA encoder: the only view of the world the predictor and the planner get.

`load_encoder(source)` reads transformers VJEPA2 weights (a hub id from the local Hugging Face cache,
a local directory, or the output directory of `jepa-agent pretrain`) and returns a `FrozenEncoder`:

    encode(frames uint8 (B, T, H, W, 3)) -> float32 (B, T', N, D),  T' = ceil(T / tubelet_size)
    encode_images(images uint8 (B, H, W, 3)) -> float32 (B, N, D)

Frames of any size are resized to the model's crop size (bilinear, antialiased; transformers derives
RoPE positions from `config.crop_size`, so another size must never reach the model) and normalised
with the ImageNet mean/std. T is padded to a multiple of the tubelet by repeating the last frame, so a
single image fills one tubelet with copies of itself, as V-JEPA 2-AC embeds images. The model runs in
eval mode without gradients, in chunks of `chunk_size` clips, optionally under bf16 autocast.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
import torch.nn.functional as F
from transformers import VJEPA2Config
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2Encoder

from world_model.device import bf16_autocast, resolve_device
from world_model.vjepa.weights import load_vjepa2_encoder, random_vjepa2_encoder, resolve_source

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING_ID = "resize-bilinear-antialias/imagenet-mean-std/v1"  # part of the fingerprint


def as_frames(frames: np.ndarray | torch.Tensor, rank: int = 5) -> torch.Tensor:
    """Check uint8 channels-last frames of the given rank and return them as a tensor (no copy if writable)."""
    expected = "(B, T, H, W, 3)" if rank == 5 else "(B, H, W, 3)"
    if isinstance(frames, np.ndarray):  # a read-only array (a memory-mapped dataset) is copied, as torch needs
        frames = torch.from_numpy(np.ascontiguousarray(frames) if frames.flags.writeable else np.array(frames))
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"frames must be a uint8 array {expected}, got {type(frames).__name__}")
    shape = tuple(frames.shape)
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 {expected} (0-255), got dtype {frames.dtype} shape {shape}")
    if frames.ndim != rank:
        raise ValueError(f"frames must be uint8 {expected}, got rank {frames.ndim} shape {shape}")
    if shape[-1] != 3:
        hint = " (channels first? expected channels last)" if shape[-3] == 3 else ""
        raise ValueError(f"frames must be uint8 {expected} with 3 RGB channels last, got shape {shape}{hint}")
    if 0 in shape:
        raise ValueError(f"frames must be uint8 {expected} with no empty dimension, got shape {shape}")
    return frames


def preprocess_frames(frames: torch.Tensor, crop_size: int) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float32 (B, T, 3, S, S): resized to S = crop_size, ImageNet-normalised."""
    batch, time, height, width, _ = frames.shape
    pixels = frames.reshape(batch * time, height, width, 3).permute(0, 3, 1, 2).float().div_(255)
    if (height, width) != (crop_size, crop_size):
        pixels = F.interpolate(pixels, size=(crop_size, crop_size), mode="bilinear",
                               antialias=True, align_corners=False)  # (B*T, 3, S, S)
    mean = pixels.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = pixels.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = (pixels - mean) / std
    return pixels.reshape(batch, time, 3, crop_size, crop_size)


def pad_to_tubelets(frames: torch.Tensor, tubelet_size: int) -> torch.Tensor:
    """(B, T, ...) -> (B, T'*tubelet_size, ...) by repeating the last frame."""
    missing = -frames.shape[1] % tubelet_size
    if missing == 0:
        return frames
    last = frames[:, -1:].expand(-1, missing, *frames.shape[2:])
    return torch.cat([frames, last], dim=1)


class FrozenEncoder:
    """A V-JEPA 2 encoder frozen for inference; see the module docstring for shapes."""

    def __init__(self, encoder: VJEPA2Encoder, config: VJEPA2Config, source: str,
                 device: str | torch.device | None = None, autocast_bf16: bool = False,
                 chunk_size: int = 64):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.device = resolve_device(device)
        self.model = encoder.to(self.device).eval().requires_grad_(False)
        self.config = config
        self.source = source
        self.autocast_bf16 = autocast_bf16
        self.chunk_size = chunk_size
        self._fingerprint: str | None = None

    @property
    def input_size(self) -> int:
        """Side of the square model input (config.crop_size)."""
        return self.config.crop_size

    @property
    def tubelet_size(self) -> int:
        return self.config.tubelet_size

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (h, w) of one tubelet; N = h * w."""
        side = self.config.crop_size // self.config.patch_size
        return side, side

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    @property
    def fingerprint(self) -> str:
        """sha256 of the architecture, the preprocessing and every encoder weight (cached)."""
        if self._fingerprint is None:
            digest = hashlib.sha256(PREPROCESSING_ID.encode())
            architecture = {k: v for k, v in self.config.to_dict().items() if k != "transformers_version"}
            digest.update(json.dumps(architecture, sort_keys=True, default=str).encode())
            for name, tensor in sorted(self.model.state_dict().items()):
                tensor = tensor.detach().to("cpu", torch.float32).contiguous()
                digest.update(f"{name}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _autocast(self):
        return bf16_autocast(self.device, self.autocast_bf16)

    @torch.inference_mode()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) -> float32 (B, T', N, D) on `self.device`."""
        frames = pad_to_tubelets(as_frames(frames, rank=5), self.tubelet_size)  # (B, T'*tubelet, H, W, 3)
        batch, padded_time = frames.shape[:2]
        tubelets = padded_time // self.tubelet_size
        chunks = []
        for start in range(0, batch, self.chunk_size):
            clip = frames[start:start + self.chunk_size].to(self.device, non_blocking=True)
            pixels = preprocess_frames(clip, self.input_size)  # (b, T'*tubelet, 3, S, S)
            with self._autocast():
                tokens = self.model(pixels).last_hidden_state  # (b, T'*N, D)
            chunks.append(tokens.float().reshape(len(clip), tubelets, self.num_tokens, self.dim))
        return torch.cat(chunks)  # (B, T', N, D)

    def encode_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, N, D): each image repeated to fill one tubelet."""
        return self.encode(as_frames(images, rank=4)[:, None])[:, 0]

    def __repr__(self) -> str:
        return (f"FrozenEncoder(source={self.source!r}, input={self.input_size}px, grid={self.grid}, "
                f"dim={self.dim}, tubelet={self.tubelet_size}, device={self.device.type})")


def load_encoder(source: str, device: str | torch.device | None = None, autocast_bf16: bool = False,
                 chunk_size: int = 64) -> FrozenEncoder:
    """Frozen encoder from a hub id (local HF cache only), a weights directory or a pretrain output."""
    config, encoder = load_vjepa2_encoder(resolve_source(str(source)))
    return FrozenEncoder(encoder, config, str(source), device, autocast_bf16, chunk_size)


def random_encoder(config: VJEPA2Config, seed: int = 0, device: str | torch.device | None = None,
                   autocast_bf16: bool = False, chunk_size: int = 64) -> FrozenEncoder:
    """A randomly initialised encoder of the same architecture: the baseline the probe compares to."""
    return FrozenEncoder(random_vjepa2_encoder(config, seed), config, f"random(seed={seed})",
                         device, autocast_bf16, chunk_size)
