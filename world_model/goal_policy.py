"""Goal-conditioned policy in latent space: the amortized agent's whole decision, in one MLP call.

Instead of searching for actions with the predictor (CEM: 300 x 10 rollouts per plan), a small MLP maps
the current frame and the goal frame to an action chunk of `blocks` action blocks. Inputs, per env:

    latents (N, D')        the current frame's prepared predictor latents (pooled, projected, layer-normed)
    goal_latents (N, D')   the goal image's, the same way (latent_size = 0: neither is read)
    proprio (P,)           the current proprio, standardised by the predictor's statistics (P = 0: not read)
    readout (R + O,)       what the run's readouts read from the current and the goal frame: with a position
    goal_readout (R + O,)  readout, its R outputs (standardised linear positions, sines and cosines of the
                           angles) from the encoder tokens; with a latent readout (the cube), the O object
                           positions it reads from the prepared latents, standardised

Trained by goal-conditioned behaviour cloning with hindsight goals (`jepa-agent policy`): a training
sample is a frame t of a cached training episode, the goal the frame t + j (j uniform in 1..goal_steps
task steps), and the target the `blocks * block` actions the behaviour policy executed from t on.
The chunk is the amortized agent's plan (it executes the first block, then asks again) and CEM's warm
start (`evaluate.agent=amortized_cem`).

    policy = GoalPolicy(PolicyConfig(latent_size=128, proprio_dim=4, readout_dim=4, block_dim=10, blocks=5))
    chunk = policy(latents (B, N, D'), goal_latents (B, N, D'), proprio (B, P), readout (B, R),
                   goal_readout (B, R))   # (B, blocks, block*A) in [-1, 1]
    readout = frame_readouts(position_readout, latent_readout, tokens (B, n, n, D), latents (B, N, D'))  # (B, R+O)

`world_model.policy_training` trains and saves it; `load_goal_policy` reads it back (safetensors).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bookkeeping.io import load_module, save_module
from world_model.predictor import pool_token_grid

WEIGHTS_FILE = "goal_policy.safetensors"
META_FILE = "goal_policy.json"


@dataclass(frozen=True)
class PolicyConfig:
    latent_size: int      # N * D': one frame's prepared latents, flattened (0: it reads none)
    proprio_dim: int      # P: standardised proprio entries it reads (0: none)
    readout_dim: int      # R: position-readout outputs per frame (0: not read)
    block_dim: int        # block * A: one action block, flattened
    blocks: int = 5       # action blocks per chunk
    hidden: int = 256
    depth: int = 2        # hidden layers
    object_dim: int = 0   # O: latent-readout (object position) outputs per frame (0: not read)

    def __post_init__(self):
        for name in ("block_dim", "blocks", "hidden", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"policy.{name}={getattr(self, name)!r} is invalid; expected an int >= 1")
        if min(self.latent_size, self.readout_dim, self.object_dim) < 0 or \
                self.latent_size + self.readout_dim + self.object_dim < 1:
            raise ValueError(f"a goal policy of latent_size={self.latent_size}, readout_dim={self.readout_dim} and "
                             f"object_dim={self.object_dim} reads no frame; expected latents, a readout or both")

    @property
    def input_dim(self) -> int:
        return 2 * self.latent_size + self.proprio_dim + 2 * (self.readout_dim + self.object_dim)


class GoalPolicy(nn.Module):
    """An MLP from (current frame, goal frame, proprio) features to an action chunk (module docstring)."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        self.register_buffer("input_mean", torch.zeros(config.input_dim))
        self.register_buffer("input_std", torch.ones(config.input_dim))
        layers, width = [], config.input_dim
        for _ in range(config.depth):
            layers += [nn.Linear(width, config.hidden), nn.LayerNorm(config.hidden), nn.GELU()]
            width = config.hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.blocks * config.block_dim)

    def features(self, latents: torch.Tensor, goal_latents: torch.Tensor, proprio: torch.Tensor | None,
                 readout: torch.Tensor | None, goal_readout: torch.Tensor | None) -> torch.Tensor:
        """The inputs of the module docstring -> (B, input_dim), unstandardised."""
        parts = [latents.flatten(1), goal_latents.flatten(1)] if self.config.latent_size else []  # (B, N*D') each
        if self.config.proprio_dim:
            parts.append(proprio)  # (B, P)
        if self.config.readout_dim + self.config.object_dim:
            parts += [readout, goal_readout]  # (B, R + O) each
        features = torch.cat([part.float() for part in parts], dim=-1)
        if features.shape[-1] != self.config.input_dim:
            raise ValueError(f"goal policy got {features.shape[-1]} input features; expected {self.config.input_dim} "
                             f"({self.config}): was it trained on another run's predictor or readout?")
        return features

    def fit_normalisation(self, features: torch.Tensor) -> None:
        """Per-feature mean and std of training inputs (M, input_dim)."""
        self.input_mean.copy_(features.float().mean(0))
        self.input_std.copy_(features.float().std(0).clamp_min(1e-3))

    def act_on_features(self, features: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) -> action chunk (B, blocks, block*A) in [-1, 1]."""
        hidden = self.body((features - self.input_mean) / self.input_std)
        return torch.tanh(self.head(hidden)).view(len(features), self.config.blocks, self.config.block_dim)

    def forward(self, latents: torch.Tensor, goal_latents: torch.Tensor, proprio: torch.Tensor | None = None,
                readout: torch.Tensor | None = None, goal_readout: torch.Tensor | None = None) -> torch.Tensor:
        return self.act_on_features(self.features(latents, goal_latents, proprio, readout, goal_readout))


def frame_readouts(position_readout, latent_readout, tokens: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """What the readouts read from B frames -> (B, R + O): the position readout's outputs from the encoder tokens
    (B, N_enc, D) or (B, h, w, D) (standardised linear positions, then sines and cosines of the angles:
    `PositionReadout.outputs`), then the latent readout's standardised object positions from the prepared
    latents (B, N', D'). A readout that is None adds nothing."""
    parts = [tokens.new_zeros(len(tokens), 0).float()]
    if position_readout is not None:
        parts.append(position_readout.outputs(pool_token_grid(tokens.float(), position_readout.config.grid)))
    if latent_readout is not None:
        parts.append(latent_readout.standardised(latents.float()))  # (B, O)
    return torch.cat(parts, dim=-1)


def save_goal_policy(policy: GoalPolicy, directory: str | Path, meta: dict) -> None:
    """`goal_policy.safetensors` and `goal_policy.json` (its config under "config", plus `meta`), crash-safe."""
    save_module(policy, directory, WEIGHTS_FILE, META_FILE, meta)


def load_goal_policy(directory: str | Path, device: str | torch.device | None = None,
                     predictor_sha256: str | None = None) -> tuple[GoalPolicy, dict]:
    """The policy saved in `directory` (safetensors: loading runs no code) -> (policy in eval mode, meta).
    With `predictor_sha256`, a policy trained on another predictor's latents is refused."""

    def same_predictor(meta: dict) -> None:
        trained_on = meta.get("predictor_sha256")
        if predictor_sha256 and trained_on and trained_on != predictor_sha256:
            raise ValueError(f"goal policy in {str(directory)!r} was trained on the latents of another predictor "
                             f"({trained_on[:16]}, not {predictor_sha256[:16]}); train it again with "
                             "`jepa-agent policy`")

    return load_module(directory, WEIGHTS_FILE, META_FILE, lambda config: GoalPolicy(PolicyConfig(**config)),
                       "goal policy", "train one with `jepa-agent policy` (same preset and overrides as the run)",
                       "train it again with `jepa-agent policy run.overwrite=true`", device, same_predictor)
