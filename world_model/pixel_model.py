"""Action-conditioned next-frame generator: the pixel world model (`world_model=pixel`, issue 27).

The counterpart of the latent predictor (world_model/predictor.py) that generates pixels instead of
predicting representations, with the same block-causal transformer over action blocks:

    conv encoder     frame (3, S, S) -> feature maps at S/2, S/4, ..., g = S / 2^L (L = len(channels))
                     -> the g x g x channels[-1] map flattened into ONE token per frame (width W)
    transformer      `TransformerBlock`s of world_model.frame_attention (banded block-causal, learned
                     bias per frame offset, actions modulating every layer's LayerNorms: adaLN)
    conv decoder     token -> g x g map -> transposed convs back to S x S, each scale adding the encoder's
                     map of the same frame (U-Net skips: the frame's detail need not pass the token)
    next frame       = frame + decoded change (the last layer starts at zero: an untrained model is the
                     copy-the-last-frame baseline, as the latent predictor starts as copy-last-latent)

Frames are float (..., 3, S, S) in [-0.5, 0.5] (`to_model_frames` from uint8 (..., S, S, 3)).

    forward(frames (B, F, 3, S, S), actions (B, F, block*A)) -> next frames (B, F, 3, S, S)
    rollout(context (Bc, C, 3, S, S), actions (B, H, block*A), context_actions (Bc, C-1, block*A) | None)
        -> (B, H, 3, S, S), B a multiple of Bc (K candidates per context row)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bookkeeping.io import load_module, save_module
from world_model.frame_attention import KeyValues, TransformerBlock

WEIGHTS_FILE = "pixel_model.safetensors"
META_FILE = "meta.json"


@dataclass(frozen=True)
class PixelModelConfig:
    image_size: int                     # S: frames are S x S
    action_dim: int                     # A
    block: int = 5                      # task steps per frame, as the latent predictor's
    channels: tuple[int, ...] = (16, 32, 128, 256)  # conv encoder widths, one stride-2 conv each; the decoder mirrors
    width: int = 192
    depth: int = 4
    heads: int = 6
    mlp_ratio: float = 4.0
    context_frames: int = 2
    condition_width: int = 64

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or self.image_size % 2 ** len(self.channels):
            raise ValueError(f"image size {self.image_size} is invalid for pixel.channels={list(self.channels)}; "
                             f"expected a multiple of 2^{len(self.channels)} (one halving per conv)")

    @property
    def grid(self) -> int:
        """g: side of the encoder's last feature map."""
        return self.image_size // 2 ** len(self.channels)


def to_model_frames(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> float (..., 3, S, S) in [-0.5, 0.5]."""
    return images.movedim(-1, -3).float() / 255.0 - 0.5


def to_images(frames: torch.Tensor) -> torch.Tensor:
    """float (..., 3, S, S) -> uint8 (..., S, S, 3), clipped."""
    return ((frames.float() + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1)


class PixelWorldModel(nn.Module):
    def __init__(self, config: PixelModelConfig):
        super().__init__()
        self.config = config
        channels, width, grid = config.channels, config.width, config.grid
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(inputs, outputs, 4, stride=2, padding=1), nn.SiLU())
                                  for inputs, outputs in zip((3, *channels[:-1]), channels))
        self.token_in = nn.Linear(channels[-1] * grid * grid, width)
        self.action_in = nn.Sequential(nn.Linear(config.block * config.action_dim, config.condition_width), nn.SiLU(),
                                       nn.Linear(config.condition_width, config.condition_width))
        self.blocks = nn.ModuleList(
            TransformerBlock(width, config.heads, config.mlp_ratio, config.context_frames, config.condition_width)
            for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(width)
        self.token_out = nn.Linear(width, channels[-1] * grid * grid)
        # up[i]: channels[-1-i] -> channels[-2-i] (the last: -> 3), each doubling the side by a 3 x 3 conv to
        # 4x the channels and a pixel shuffle: no conv runs at the full resolution (there it costs 10x more)
        self.up = nn.ModuleList(nn.Sequential(nn.Conv2d(inputs, 4 * outputs, 3, padding=1), nn.PixelShuffle(2))
                                for inputs, outputs in zip(channels[::-1], (*channels[::-1][1:], 3)))
        nn.init.zeros_(self.up[-1][0].weight)  # the change starts at zero: the copy-the-last-frame baseline
        nn.init.zeros_(self.up[-1][0].bias)

    def advance(self, frames: torch.Tensor, actions: torch.Tensor, caches: list[KeyValues] | None,
                first_frame: int):
        """F new frames after the cached ones: frames (B, F, 3, S, S), actions (B, F, block*A) executed
        after each -> (next frames (B, F, 3, S, S), caches incl. the new frames)."""
        batch, count = frames.shape[:2]
        maps, features = [], frames.flatten(0, 1)  # (B*F, 3, S, S)
        for layer in self.down:
            features = layer(features)  # (B*F, c_i, S / 2^(i+1), ...)
            maps.append(features)
        sequence = self.token_in(features.flatten(1)).view(batch, count, -1)  # (B, F, W): one token per frame
        condition = self.action_in(actions)  # (B, F, condition_width)
        query_frames = torch.arange(first_frame, first_frame + count, device=frames.device)  # (F,)
        new_caches = []
        for layer, block in enumerate(self.blocks):
            sequence, cache = block(sequence, query_frames, condition, None if caches is None else caches[layer])
            new_caches.append(cache)
        grid = self.config.grid
        decoded = self.token_out(self.final_norm(sequence)).view(batch * count, -1, grid, grid)  # (B*F, c_L, g, g)
        for index, (layer, skip) in enumerate(zip(self.up, maps[::-1])):
            decoded = layer(decoded + skip)  # doubles the side
            if index < len(self.up) - 1:
                decoded = nn.functional.silu(decoded)
        change = decoded.view_as(frames)  # (B, F, 3, S, S)
        return frames + change.to(frames.dtype), new_caches

    def forward(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced one-step predictions for every frame (module docstring)."""
        return self.advance(frames, actions, caches=None, first_frame=0)[0]

    def rollout(self, context: torch.Tensor, actions: torch.Tensor,
                context_actions: torch.Tensor | None = None) -> torch.Tensor:
        """Autoregressive generation of H frames, each fed back: context (Bc, C, 3, S, S) of the last C
        observed frames (the last `context_frames` are used), actions (B, H, block*A) from the last one,
        context_actions (Bc, C-1, block*A) between them (None: zeros) -> (B, H, 3, S, S). Rows b*K ..
        b*K + K - 1 of `actions` share context row b, whose earlier frames run once."""
        context_batch, count = context.shape[:2]
        if actions.shape[0] % context_batch:
            raise ValueError(f"{actions.shape[0]} action rows are not a multiple of {context_batch} contexts")
        samples = actions.shape[0] // context_batch
        if context_actions is None:
            context_actions = actions.new_zeros(context_batch, count - 1, actions.shape[-1])
        keep = min(count, self.config.context_frames)
        window = context[:, count - keep:]  # (Bc, C', 3, S, S)
        caches = None
        if keep > 1:  # frames before the last one: the same for every candidate
            window_actions = context_actions[:, context_actions.shape[1] - (keep - 1):]  # (Bc, C'-1, block*A)
            _, caches = self.advance(window[:, :-1], window_actions, None, 0)
            caches = [cache.repeat(samples) for cache in caches] if samples > 1 else caches
        return self.roll_on(window[:, -1:].repeat_interleave(samples, dim=0), caches, actions)

    def roll_on(self, frame: torch.Tensor, caches: list[KeyValues] | None, actions: torch.Tensor) -> torch.Tensor:
        """frame (B, 1, 3, S, S) after the cached frames (or none), actions (B, H, block*A) -> (B, H, 3, S, S)."""
        predicted, index = [], 0
        for step in range(actions.shape[1]):
            if caches is not None:
                caches = [cache.last_frames(self.config.context_frames - 1, 1).renumbered() for cache in caches]
                index = caches[0].frames.numel()  # one token per frame
            frame, caches = self.advance(frame, actions[:, step : step + 1], caches, index)
            predicted.append(frame[:, 0])
        return torch.stack(predicted, dim=1)


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def save_pixel_model(model: PixelWorldModel, directory: str | Path, meta: dict) -> Path:
    """Write `pixel_model.safetensors` and `meta.json` (the model config under "config", plus `meta`)."""
    return save_module(model, directory, WEIGHTS_FILE, META_FILE, meta)


def load_pixel_model(path: str | Path, device: str | torch.device | None = None) -> tuple[PixelWorldModel, dict]:
    """A trained pixel model from its directory -> (model in eval mode, meta). Safetensors only: nothing
    in the file runs; a damaged or mismatched file is a one-line ValueError."""
    return load_module(path, WEIGHTS_FILE, META_FILE, lambda config: PixelWorldModel(PixelModelConfig(**config)),
                       "pixel model", "train one with `jepa-agent run world_model=pixel`",
                       "train it again with `jepa-agent run world_model=pixel run.overwrite=true`", device)
