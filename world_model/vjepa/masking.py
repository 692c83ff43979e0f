"""Spatio-temporal multi-block masking, as in V-JEPA.

A clip of T' tubelets on an (h, w) token grid has N = T' * h * w tokens, indexed
`t * h * w + row * w + col` (the order of transformers' VJEPA2 patch embedding and RoPE). A mask
samples `num_blocks` rectangles on the spatial grid (area = spatial_scale * h * w, aspect ratio drawn
log-uniformly); their union is masked through *every* tubelet of the clip, so the target cannot be
copied from a neighbouring frame. Masked tokens are the prediction targets, the rest is the context:
the two sets are disjoint. Index tensors must have one length across the batch (the predictor takes
them as tensors), so each sample keeps a random subset of its spatial positions of the batch's
smallest size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockMaskSpec:
    """One mask family: `num_blocks` rectangles of `spatial_scale` x grid area each."""

    num_blocks: int
    spatial_scale: tuple[float, float]
    aspect_ratio: tuple[float, float] = (0.75, 1.5)

    def __post_init__(self) -> None:
        low, high = self.spatial_scale
        if self.num_blocks < 1 or not 0 < low <= high <= 1:
            raise ValueError(f"mask spec needs num_blocks >= 1 and 0 < spatial_scale <= 1, got {self}")
        if not 0 < self.aspect_ratio[0] <= self.aspect_ratio[1]:
            raise ValueError(f"mask spec needs 0 < aspect_ratio[0] <= aspect_ratio[1], got {self}")


class MultiBlockMasker:
    """Draws (context_ids (B, Nc), target_ids (B, Nt)) long tensors of token indices, each sorted."""

    def __init__(self, spec: BlockMaskSpec, grid: tuple[int, int], num_tubelets: int,
                 min_context: int = 4, max_tries: int = 20):
        self.spec = spec
        self.height, self.width = grid
        self.num_tubelets = num_tubelets
        self.min_context = min(min_context, self.height * self.width - 1)
        self.max_tries = max_tries

    @property
    def tokens_per_tubelet(self) -> int:
        return self.height * self.width

    def _block(self, generator: torch.Generator) -> tuple[int, int]:
        """Height and width of one block on the grid."""
        low, high = self.spec.spatial_scale
        scale = low + (high - low) * torch.rand((), generator=generator).item()
        log_low, log_high = (math.log(r) for r in self.spec.aspect_ratio)
        aspect = math.exp(log_low + (log_high - log_low) * torch.rand((), generator=generator).item())
        area = scale * self.tokens_per_tubelet
        block_height = min(self.height, max(1, round(math.sqrt(area * aspect))))
        block_width = min(self.width, max(1, round(math.sqrt(area / aspect))))
        return block_height, block_width

    def spatial_mask(self, generator: torch.Generator) -> torch.Tensor:
        """bool (h, w), True where masked: a union of blocks leaving >= min_context positions visible."""
        for _ in range(self.max_tries):
            masked = torch.zeros(self.height, self.width, dtype=torch.bool)
            for _ in range(self.spec.num_blocks):
                block_height, block_width = self._block(generator)
                top = torch.randint(self.height - block_height + 1, (), generator=generator).item()
                left = torch.randint(self.width - block_width + 1, (), generator=generator).item()
                masked[top:top + block_height, left:left + block_width] = True
            if (~masked).sum() >= self.min_context:
                return masked
        raise ValueError(f"mask spec {self.spec} leaves fewer than {self.min_context} of "
                         f"{self.tokens_per_tubelet} grid positions visible; lower spatial_scale or num_blocks")

    def _through_time(self, spatial_positions: torch.Tensor) -> torch.Tensor:
        """(B, K) spatial positions -> (B, T' * K) token indices of those positions in every tubelet."""
        offsets = torch.arange(self.num_tubelets) * self.tokens_per_tubelet  # (T',)
        return (offsets[None, :, None] + spatial_positions[:, None, :]).flatten(1)

    def __call__(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Context and target token indices for a batch; disjoint per sample, same length across it."""
        masks = torch.stack([self.spatial_mask(generator).flatten() for _ in range(batch_size)])  # (B, h*w)
        target_count = int(masks.sum(1).min())
        context_count = int((~masks).sum(1).min())

        def subset(positions: torch.Tensor, count: int) -> torch.Tensor:
            keep = torch.randperm(len(positions), generator=generator)[:count]
            return positions[keep].sort().values

        target = torch.stack([subset(row.nonzero().flatten(), target_count) for row in masks])
        context = torch.stack([subset((~row).nonzero().flatten(), context_count) for row in masks])
        return self._through_time(context), self._through_time(target)
