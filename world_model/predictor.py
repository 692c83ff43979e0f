"""Action-conditioned latent predictor (the world model), in the spirit of V-JEPA 2-AC.

One predictor "frame" is one action block: the latent of the frame seen every `block` task steps,
together with the `block` actions executed until the next one (flattened, `block * A`). Each frame
contributes
    N = k * k latent tokens   encoder tokens average-pooled to a k x k grid, optionally projected
                              to a narrower width (fixed PCA basis), then layer-normed (no affine)
    1 action token            (conditioning="token"), or the action modulates every layer's
                              LayerNorm of that frame's tokens instead (conditioning="adaln")
and, optionally (proprio_dim > 0), the proprio (e.g. qpos, qvel) embedded from Fourier features and
added to the frame's latent tokens; the next proprio is then predicted too, from the same tokens.
Attention is block-causal within a window: tokens of frame t attend to the tokens of frames
t - C + 1 .. t (C = `context_frames`), with a learned bias per frame offset instead of absolute frame
positions, so a rollout caches the keys and values of past frames and runs each new frame once.
The latent-token outputs of frame t predict frame t + 1's latent tokens as a residual on frame t's
(the output layer starts at zero, so an untrained predictor is the copy-the-last-latent baseline).

    forward(latents (B, F, N, D), actions (B, F, block*A), proprio (B, F, P) | None)
        -> (next latents (B, F, N, D), next proprio (B, F, P) | None)
    rollout(context_latents (Bc, C, N, D), actions (B, H, block*A), ...) -> (B, H, N, D), B a multiple of Bc
        (and the predicted proprio with return_proprio=True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bookkeeping.io import load_module, save_module
from world_model.frame_attention import KeyValues, TransformerBlock

WEIGHTS_FILE = "predictor.safetensors"
META_FILE = "meta.json"


@dataclass(frozen=True)
class PredictorConfig:
    """The predictor's shape. The defaults below build the plainest model (one pooled token per frame,
    an action token, no proprio) for tests and benchmarks; the pipeline's values come from
    configs/predictor/default.yaml (`train_predictor.model_config`), which differ."""

    latent_dim: int              # D: width of the (pooled) encoder tokens the predictor reads
    action_dim: int              # A: task action dimension
    block: int = 5               # task steps per predictor frame
    pool_grid: int = 1           # k: latent tokens per frame = k * k
    projection_dim: int | None = None  # D': fixed PCA projection of the latents; None keeps their width
    flatten_grid: bool = False   # one token per frame: the k x k grid concatenated (k*k*D), then projected
    width: int = 256
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    context_frames: int = 3      # C: the attention window, in frames (the frame itself and C - 1 before)
    conditioning: str = "token"  # "token" (one action token per frame) | "adaln"
    condition_width: int = 64    # adaln: width of the action embedding that modulates every layer
    proprio_dim: int = 0         # P > 0: the proprio enters every latent token; the next proprio is predicted
    proprio_frequencies: int = 6  # F: Fourier features sin/cos(2^f x), f < F, of the standardised proprio

    @property
    def tokens(self) -> int:
        """N: latent tokens per frame."""
        return 1 if self.flatten_grid else self.pool_grid * self.pool_grid

    @property
    def token_dim(self) -> int:
        """Width of one token before the projection: D, or k*k*D with flatten_grid."""
        return self.latent_dim * (self.pool_grid**2 if self.flatten_grid else 1)

    @property
    def output_dim(self) -> int:
        """D': width of the predictor's latents (after the optional projection)."""
        return self.projection_dim or self.token_dim

    def __post_init__(self):
        if self.conditioning not in ("token", "adaln"):
            raise ValueError(f"predictor.conditioning={self.conditioning!r} is invalid; expected 'token' or 'adaln'")
        if self.width % self.heads:
            raise ValueError(f"predictor.width={self.width} is not divisible by heads={self.heads}")
        if self.proprio_frequencies < 0:
            raise ValueError(f"predictor.proprio_frequencies={self.proprio_frequencies} is invalid; expected >= 0")
        for name in ("context_frames", "block", "pool_grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"predictor.{name}={getattr(self, name)!r} is invalid; expected an int >= 1")
        if self.projection_dim is not None and not 0 < self.projection_dim <= self.token_dim:
            raise ValueError(f"predictor.projection_dim={self.projection_dim} is invalid; "
                             f"expected 1..{self.token_dim} (the token width) or null")


def pool_token_grid(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool a token grid: (..., h, w, D) or (B, h*w, D) with a square grid -> (..., grid, grid, D)."""
    if tokens.dim() == 3:
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"cannot pool {tokens.shape[1]} tokens: not a square grid; pass (B, h, w, D)")
        tokens = tokens.unflatten(1, (side, side))  # (B, h, w, D)
    height, width = tokens.shape[-3:-1]
    if grid > min(height, width):
        raise ValueError(f"pool grid {grid}x{grid} is larger than the token grid {height}x{width}")
    if (height, width) == (grid, grid):
        return tokens
    leading = tokens.shape[:-3]
    channels_first = tokens.reshape(-1, height, width, tokens.shape[-1]).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(channels_first.float(), grid).to(tokens.dtype)  # (M, D, grid, grid)
    return pooled.permute(0, 2, 3, 1).reshape(*leading, grid, grid, tokens.shape[-1])


class Predictor(nn.Module):
    """Block-causal transformer over frames that predicts the next frame's latent tokens."""

    def __init__(self, config: PredictorConfig):
        super().__init__()
        self.config = config
        width, latent_width = config.width, config.output_dim
        self.uses_action_token = config.conditioning == "token"
        self.tokens_per_frame = config.tokens + int(self.uses_action_token)
        if config.projection_dim is not None:
            self.register_buffer("projection_mean", torch.zeros(config.token_dim))
            self.register_buffer("projection", torch.eye(config.token_dim)[:, : config.projection_dim])
        self.latent_in = nn.Linear(latent_width, width)
        action_width = width if self.uses_action_token else config.condition_width
        self.action_in = nn.Sequential(nn.Linear(config.block * config.action_dim, action_width), nn.SiLU(),
                                       nn.Linear(action_width, action_width))
        if config.proprio_dim:
            self.register_buffer("proprio_mean", torch.zeros(config.proprio_dim))
            self.register_buffer("proprio_std", torch.ones(config.proprio_dim))
            self.proprio_in = nn.Sequential(
                nn.Linear(config.proprio_dim * (1 + 2 * config.proprio_frequencies), width), nn.SiLU(),
                nn.Linear(width, width))
            self.proprio_out = nn.Linear(width, config.proprio_dim)
            nn.init.zeros_(self.proprio_out.weight)
            nn.init.zeros_(self.proprio_out.bias)
        self.token_position = nn.Parameter(0.02 * torch.randn(self.tokens_per_frame, width))  # within a frame
        self.blocks = nn.ModuleList(
            TransformerBlock(width, config.heads, config.mlp_ratio, config.context_frames,
                             condition_width=None if self.uses_action_token else config.condition_width)
            for _ in range(config.depth)
        )
        self.final_norm = nn.LayerNorm(width)
        self.latent_out = nn.Linear(width, latent_width)
        nn.init.zeros_(self.latent_out.weight)  # start as the copy-the-last-latent baseline
        nn.init.zeros_(self.latent_out.bias)

    # ---- normalisation shared by the cache reader, training, diagnostics and the agent ----
    def prepare_latents(self, encoder_tokens: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N_enc, D) or (..., h, w, D) -> predictor latents (..., N, D'):
        pooled to k x k, projected (if configured) and layer-normed without affine."""
        pooled = self.pool(encoder_tokens).float()  # (..., N, D) or (..., 1, k*k*D)
        if self.config.projection_dim is not None:
            pooled = (pooled - self.projection_mean) @ self.projection  # (..., N, D')
        return F.layer_norm(pooled, pooled.shape[-1:])

    def pool(self, encoder_tokens: torch.Tensor) -> torch.Tensor:
        """Encoder tokens -> (..., N, token_dim) before projection and normalisation."""
        pooled = pool_token_grid(encoder_tokens, self.config.pool_grid)  # (..., k, k, D)
        if self.config.flatten_grid:
            return pooled.flatten(-3, -1).unsqueeze(-2)  # (..., 1, k*k*D)
        return pooled.flatten(-3, -2)  # (..., k*k, D)

    def prepare_proprio(self, proprio: torch.Tensor) -> torch.Tensor:
        """Raw proprio (..., P) -> standardised (..., P) with the statistics of the training set."""
        return (proprio.float() - self.proprio_mean) / self.proprio_std

    def proprio_features(self, proprio: torch.Tensor) -> torch.Tensor:
        """Standardised proprio (..., P) -> (..., P * (1 + 2F)): itself and sin, cos(2^f x) for f < F. Where the
        latent is a sharp function of the state (a thin arm), these let the model render it finely."""
        frequencies = 2.0 ** torch.arange(self.config.proprio_frequencies, device=proprio.device)
        angles = (proprio.unsqueeze(-1) * frequencies).flatten(-2)  # (..., P * F)
        return torch.cat([proprio, angles.sin(), angles.cos()], dim=-1)

    @torch.no_grad()
    def fit_normalisation(self, pooled_tokens: torch.Tensor, proprio: torch.Tensor | None = None) -> None:
        """Fit the fixed PCA projection on pooled training tokens (M, token_dim) and the proprio statistics (M, P)."""
        if self.config.projection_dim is not None:
            mean = pooled_tokens.float().mean(0)
            _, _, right_vectors = torch.linalg.svd(pooled_tokens.float() - mean, full_matrices=False)
            self.projection_mean.copy_(mean)
            self.projection.copy_(right_vectors[: self.config.projection_dim].T)  # (D, D')
        if self.config.proprio_dim and proprio is not None:
            self.proprio_mean.copy_(proprio.float().mean(0))
            self.proprio_std.copy_(proprio.float().std(0).clamp_min(1e-3))

    # ---- prediction ----
    def forward(self, latents: torch.Tensor, actions: torch.Tensor,
                proprio: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced one-step predictions for every frame.

        latents (B, F, N, D') prepared, actions (B, F, block*A) executed after each frame,
        proprio (B, F, P) standardised or None -> (next latents (B, F, N, D'), next proprio (B, F, P) | None).
        """
        (next_latents, next_proprio), _ = self.advance(latents, actions, proprio, caches=None, first_frame=0)
        return next_latents, next_proprio

    def advance(self, latents: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None,
                caches: list[KeyValues] | None, first_frame: int):
        """Run F new frames after the cached ones: latents (B, F, N, D'), actions (B, F, block*A),
        proprio (B, F, P) | None, caches (one per layer) | None, `first_frame` the index of the first
        new frame -> ((next latents (B, F, N, D'), next proprio (B, F, P) | None), caches incl. the new frames).
        """
        batch, frames, tokens, _ = latents.shape
        action_embedding = self.action_in(actions)  # (B, F, W) token, (B, F, condition_width) adaln
        latent_tokens = self.latent_in(latents)  # (B, F, N, W)
        if self.config.proprio_dim:
            latent_tokens = latent_tokens + self.proprio_in(self.proprio_features(proprio)).unsqueeze(2)
        parts = [latent_tokens]
        if self.uses_action_token:
            parts.append(action_embedding.unsqueeze(2))  # (B, F, 1, W)
        sequence = (torch.cat(parts, dim=2) + self.token_position).flatten(1, 2)  # (B, S, W), S = F * tokens_per_frame
        condition = None
        if not self.uses_action_token:
            condition = action_embedding.repeat_interleave(self.tokens_per_frame, dim=1)  # (B, S, condition_width)
        query_frames = torch.arange(first_frame, first_frame + frames, device=latents.device)
        query_frames = query_frames.repeat_interleave(self.tokens_per_frame)  # (S,)
        new_caches = []
        for layer, block in enumerate(self.blocks):
            sequence, cache = block(sequence, query_frames, condition, None if caches is None else caches[layer])
            new_caches.append(cache)
        outputs = self.final_norm(sequence).view(batch, frames, self.tokens_per_frame, -1)
        next_latents = latents + self.latent_out(outputs[:, :, :tokens]).to(latents.dtype)  # (B, F, N, D')
        next_proprio = None
        if self.config.proprio_dim:
            next_proprio = proprio + self.proprio_out(outputs[:, :, :tokens].mean(2)).to(proprio.dtype)  # (B, F, P)
        return (next_latents, next_proprio), new_caches

    def rollout(self, context_latents: torch.Tensor, actions: torch.Tensor,
                context_actions: torch.Tensor | None = None, context_proprio: torch.Tensor | None = None,
                return_proprio: bool = False):
        """Autoregressive prediction of H action blocks, feeding predictions back.

        context_latents (Bc, C, N, D') prepared latents of the last C observed frames (C >= 1; only the
        last `context_frames` are used), actions (B, H, block*A) to execute from the last context frame,
        context_actions (Bc, C-1, block*A): the blocks executed between the context frames (None = zeros),
        context_proprio (Bc, C, P) standardised (required when the model uses proprio).
        B may be a multiple of Bc: rows b*K .. b*K + K - 1 of `actions` (K = B / Bc candidates) share
        context row b, whose frames are then run once instead of K times.
        Returns predicted latents (B, H, N, D') [and proprio (B, H, P) when return_proprio].

        Each new frame runs once: the keys and values of the frames in the attention window are cached
        (exact, since attention only uses relative frame offsets).
        """
        context_batch, context = context_latents.shape[:2]
        if actions.shape[0] % context_batch:
            raise ValueError(f"{actions.shape[0]} action rows are not a multiple of {context_batch} contexts")
        samples, window = actions.shape[0] // context_batch, self.config.context_frames
        if context_actions is None:
            context_actions = actions.new_zeros(context_batch, context - 1, actions.shape[-1])
        if self.config.proprio_dim and context_proprio is None:
            raise ValueError("this predictor uses proprio: rollout needs context_proprio (B, C, P)")
        keep = min(context, window)
        window_latents = context_latents[:, context - keep:]  # (Bc, C', N, D')
        window_actions = context_actions[:, context_actions.shape[1] - (keep - 1):]  # (Bc, C'-1, block*A)
        window_proprio = context_proprio[:, context - keep:] if self.config.proprio_dim else None
        caches = None
        if keep > 1:  # frames before the last one: their actions are known, the same for every candidate
            _, caches = self.advance(window_latents[:, :-1], window_actions,
                                     window_proprio[:, :-1] if window_proprio is not None else None, None, 0)
            caches = [cache.repeat(samples) for cache in caches] if samples > 1 else caches
        frame_latents = window_latents[:, -1:].repeat_interleave(samples, dim=0)  # (B, 1, N, D')
        frame_proprio = None
        if window_proprio is not None:
            frame_proprio = window_proprio[:, -1:].repeat_interleave(samples, dim=0)  # (B, 1, P)
        latents, proprio = self.roll_on(frame_latents, frame_proprio, caches, actions)
        return (latents, proprio) if return_proprio else latents

    def roll_on(self, frame_latents: torch.Tensor, frame_proprio: torch.Tensor | None,
                caches: list[KeyValues] | None, actions: torch.Tensor):
        """The rollout loop: a frame (latents (B, 1, N, D'), proprio (B, 1, P) | None) after the cached
        frames (or the first, with no caches), actions (B, H, block*A) from it -> (latents (B, H, N, D'),
        proprio (B, H, P) | None)."""
        predicted_latents, predicted_proprio = [], []
        frame = 0
        for step in range(actions.shape[1]):
            if caches is not None:
                caches = [cache.last_frames(self.config.context_frames - 1, self.tokens_per_frame).renumbered()
                          for cache in caches]
                frame = caches[0].frames.numel() // self.tokens_per_frame  # the new frame follows the cached ones
            (frame_latents, frame_proprio), caches = self.advance(
                frame_latents, actions[:, step : step + 1], frame_proprio, caches, frame)
            predicted_latents.append(frame_latents[:, 0])
            if frame_proprio is not None:
                predicted_proprio.append(frame_proprio[:, 0])
        latents = torch.stack(predicted_latents, dim=1)  # (B, H, N, D')
        return latents, torch.stack(predicted_proprio, dim=1) if predicted_proprio else None


def save_predictor(model: Predictor, directory: str | Path, meta: dict) -> Path:
    """Write `predictor.safetensors` and `meta.json` (the model config under "config", plus `meta`)."""
    return save_module(model, directory, WEIGHTS_FILE, META_FILE, meta)


def load_predictor(path: str | Path, device: str | torch.device | None = None) -> tuple[Predictor, dict]:
    """Load a trained predictor from its directory (or its .safetensors file) -> (model in eval mode, meta).
    Safetensors only: nothing in the file runs; a damaged or mismatched file is a one-line ValueError."""
    directory = Path(path)
    directory = directory.parent if directory.suffix == ".safetensors" else directory
    return load_module(directory, WEIGHTS_FILE, META_FILE, lambda config: Predictor(PredictorConfig(**config)),
                       "predictor", "train one with `jepa-agent train`",
                       "train it again with `jepa-agent train run.overwrite=true`", device)
