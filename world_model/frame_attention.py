"""Block-causal transformer layers over predictor frames, with keys and values cached across a rollout.

Every token carries the index of its frame. A query attends to the tokens of its own frame and of the
C - 1 frames before it (C = the window), with a learned bias per frame offset instead of absolute
positions, so the keys and values of past frames can be kept (`KeyValues`) and each new frame runs once.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class KeyValues(NamedTuple):
    """One layer's attention keys and values of past frames, kept during a rollout."""
    keys: torch.Tensor    # (B, heads, S, W/heads)
    values: torch.Tensor  # (B, heads, S, W/heads)
    frames: torch.Tensor  # (S,) frame index of every token

    def last_frames(self, count: int, tokens_per_frame: int) -> "KeyValues":
        keep = count * tokens_per_frame
        if keep == 0:
            return KeyValues(self.keys[:, :, :0], self.values[:, :, :0], self.frames[:0])
        return KeyValues(self.keys[:, :, -keep:], self.values[:, :, -keep:], self.frames[-keep:])

    def renumbered(self) -> "KeyValues":
        """The same frames numbered from 0 (attention only uses frame offsets, so nothing changes but
        the numbers; a rollout then calls `advance` with the same arguments at every step)."""
        return KeyValues(self.keys, self.values, self.frames - self.frames[:1])

    def repeat(self, times: int) -> "KeyValues":
        """(B, ...) -> (B * times, ...), each row repeated `times` times in a row."""
        return KeyValues(self.keys.repeat_interleave(times, dim=0), self.values.repeat_interleave(times, dim=0),
                         self.frames)


def frame_attention_bias(query_frames: torch.Tensor, key_frames: torch.Tensor,
                         offset_bias: torch.Tensor) -> torch.Tensor:
    """Additive attention bias (heads, Sq, Sk) of a banded block-causal mask with relative positions.

    query_frames (Sq,), key_frames (Sk,): the frame index of every token; offset_bias (heads, C): a
    learned bias per frame offset 0..C-1. A query attends to the keys of its own frame and of the C - 1
    frames before it (bias by offset), never to later or older ones (-inf). Nothing depends on the
    absolute frame index, so the keys and values of a past frame can be cached and reused.
    """
    offsets = query_frames[:, None] - key_frames[None, :]  # (Sq, Sk)
    window = offset_bias.shape[-1]
    inside = (offsets >= 0) & (offsets < window)
    bias = offset_bias[:, offsets.clamp(0, window - 1)]  # (heads, Sq, Sk)
    return bias.masked_fill(~inside, float("-inf"))


class TransformerBlock(nn.Module):
    """Pre-norm attention + MLP block; with a per-token `condition` its LayerNorms are modulated
    (adaLN-Zero: shift, scale and a gate that start at zero)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, window: int, condition_width: int | None):
        super().__init__()
        self.heads = heads
        adaptive = condition_width is not None
        self.norm_attention = nn.LayerNorm(width, elementwise_affine=not adaptive)
        self.qkv = nn.Linear(width, 3 * width)
        self.attention_out = nn.Linear(width, width)
        self.offset_bias = nn.Parameter(torch.zeros(heads, window))  # relative frame positions
        self.norm_mlp = nn.LayerNorm(width, elementwise_affine=not adaptive)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.modulation = nn.Linear(condition_width, 6 * width) if adaptive else None
        if self.modulation is not None:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def attend(self, tokens: torch.Tensor, query_frames: torch.Tensor, past: KeyValues | None):
        """tokens (B, S, W) of new frames -> (attended (B, S, W), keys and values incl. `past`)."""
        batch, length, width = tokens.shape
        query, key, value = self.qkv(tokens).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        key_frames = query_frames  # (S,)
        if past is not None:
            key, value = torch.cat([past.keys, key], dim=2), torch.cat([past.values, value], dim=2)
            key_frames = torch.cat([past.frames, query_frames])  # (S_past + S,)
        bias = frame_attention_bias(query_frames, key_frames, self.offset_bias).to(query.dtype)
        # plain attention: on a CPU it beats the fused kernels at these few-token lengths, and for a
        # handful of tokens broadcasting beats batched matrix products of (1 x 32) @ (32 x 2)
        if query.shape[2] * key.shape[2] <= 16:
            scores = (query.unsqueeze(3) * key.unsqueeze(2)).sum(-1)  # (B, heads, S, S_keys)
        else:
            scores = query @ key.transpose(-2, -1)
        weights = (scores * query.shape[-1] ** -0.5 + bias).softmax(dim=-1).to(value.dtype)
        if query.shape[2] * key.shape[2] <= 16:
            attended = (weights.unsqueeze(-1) * value.unsqueeze(2)).sum(3)  # (B, heads, S, W/heads)
        else:
            attended = weights @ value
        output = self.attention_out(attended.transpose(1, 2).reshape(batch, length, width))
        return output, KeyValues(key, value, key_frames)

    def forward(self, tokens: torch.Tensor, query_frames: torch.Tensor, condition: torch.Tensor | None,
                past: KeyValues | None = None) -> tuple[torch.Tensor, KeyValues]:
        if self.modulation is None:
            attended, cache = self.attend(self.norm_attention(tokens), query_frames, past)
            tokens = tokens + attended
            return tokens + self.mlp(self.norm_mlp(tokens)), cache
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(condition).chunk(6, dim=-1)
        attended, cache = self.attend(self.norm_attention(tokens) * (1 + scale_a) + shift_a, query_frames, past)
        tokens = tokens + gate_a * attended
        return tokens + gate_m * self.mlp(self.norm_mlp(tokens) * (1 + scale_m) + shift_m), cache
