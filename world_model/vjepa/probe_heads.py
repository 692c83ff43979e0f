"""Probe heads that read a task state off frozen encoder tokens, and the R^2 score they are judged by.

- `fit_ridge`: closed-form ridge regression on features (the linear probe: pooled tokens); the ridge
  strength is chosen on held-out training episodes, then the probe is refitted on all of them.
- `fit_attentive_probe`: V-JEPA's attentive probe, small: learned queries cross-attend over the
  tokens (projected to a narrow width, plus a learned embedding of each token's grid position), a
  residual MLP refines the pooled queries (as in V-JEPA's pooler), then a linear head.
Features and targets are standardised with training statistics inside each probe.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from world_model.schedules import learning_rate, set_learning_rate


def r2_scores(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination per output: (M, K), (M, K) -> (K,). 1 is perfect, 0 the mean."""
    residual = ((target - predicted) ** 2).sum(dim=0)
    total = ((target - target.mean(dim=0)) ** 2).sum(dim=0).clamp_min(1e-12)
    return 1.0 - residual / total


@dataclass
class Standardiser:
    """Per-column mean/std of training data (columns with no spread are left unscaled)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, values: torch.Tensor) -> "Standardiser":
        std = values.std(dim=0)
        return cls(values.mean(dim=0), torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std

    def inverse(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.std + self.mean


@dataclass
class RidgeProbe:
    """Linear map from standardised features (M, F) to targets (M, K)."""

    weights: torch.Tensor  # (F, K) in standardised units
    features: Standardiser
    targets: Standardiser
    alpha: float

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.targets.inverse(self.features.forward(features.double()) @ self.weights)


def ridge_weights(features: torch.Tensor, targets: torch.Tensor, alphas: list[float]) -> list[torch.Tensor]:
    """Ridge weights (F, K) from features (M, F) and targets (M, K), one per strength in `alphas`
    (relative to M), from one eigendecomposition of the smaller Gram matrix: the F x F one, or when
    F > M the M x M one, since (X^T X + a M I)^-1 X^T Y = X^T (X X^T + a M I)^-1 Y. On the point
    mass's 8 x 8 grid (F = 12288, M = 2000) that is seconds where solving the F x F system per
    strength took minutes."""
    samples, dims = features.shape
    if dims <= samples:
        eigenvalues, basis = torch.linalg.eigh(features.T @ features)  # (F,), (F, F)
        projected = basis.T @ (features.T @ targets)  # (F, K)
        return [basis @ (projected / (eigenvalues + alpha * samples)[:, None]) for alpha in alphas]
    eigenvalues, basis = torch.linalg.eigh(features @ features.T)  # (M,), (M, M)
    projected = basis.T @ targets  # (M, K)
    return [features.T @ (basis @ (projected / (eigenvalues + alpha * samples)[:, None])) for alpha in alphas]


def fit_ridge(features: torch.Tensor, targets: torch.Tensor, episode_ids: torch.Tensor,
              alphas: list[float], holdout_fraction: float = 0.2) -> RidgeProbe:
    """Ridge on (M, F) -> (M, K); alpha (relative to M) chosen on the last episodes, then refit on all."""
    features, targets = features.double(), targets.double()
    episodes = episode_ids.unique()
    held_out = torch.isin(episode_ids, episodes[int(len(episodes) * (1 - holdout_fraction)):])
    if held_out.all() or not held_out.any():
        raise ValueError(f"the ridge probe needs at least 2 training episodes, got {len(episodes)}")
    fit_features, fit_targets = Standardiser.fit(features[~held_out]), Standardiser.fit(targets[~held_out])
    train_features, train_targets = fit_features.forward(features[~held_out]), fit_targets.forward(targets[~held_out])
    candidates = ridge_weights(train_features, train_targets, alphas)
    scores = [r2_scores(fit_targets.inverse(fit_features.forward(features[held_out]) @ weights),
                        targets[held_out]).mean().item() for weights in candidates]
    alpha = alphas[max(range(len(alphas)), key=scores.__getitem__)]
    feature_scale, target_scale = Standardiser.fit(features), Standardiser.fit(targets)
    weights, = ridge_weights(feature_scale.forward(features), target_scale.forward(targets), [alpha])
    return RidgeProbe(weights, feature_scale, target_scale, alpha)


class AttentiveProbe(nn.Module):
    """tokens (B, N, D) -> predictions (B, K): tokens projected to `width`, learned queries
    cross-attend over them (residual on the queries), a residual MLP, then a linear head."""

    def __init__(self, dim: int, num_tokens: int, outputs: int, width: int = 64, num_queries: int = 4,
                 num_heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, width)
        self.token_positions = nn.Parameter(torch.zeros(num_tokens, width))  # the probe knows the grid
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.attention = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))
        self.head = nn.Linear(num_queries * width, outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keys = self.project(self.norm(tokens)) + self.token_positions  # (B, N, W)
        queries = self.queries.expand(len(tokens), -1, -1)  # (B, Q, W)
        attended, _ = self.attention(queries, keys, keys, need_weights=False)  # (B, Q, W)
        pooled = queries + attended
        pooled = pooled + self.mlp(pooled)  # (B, Q, W)
        return self.head(pooled.flatten(1))  # (B, K)


@dataclass
class FittedAttentiveProbe:
    module: AttentiveProbe
    targets: Standardiser
    token_scale: float

    @torch.no_grad()
    def predict(self, tokens: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        self.module.eval()
        outputs = [self.module(batch.float() / self.token_scale) for batch in tokens.split(batch_size)]
        return self.targets.inverse(torch.cat(outputs).double())


def fit_attentive_probe(tokens: torch.Tensor, targets: torch.Tensor, steps: int, batch_size: int,
                        lr: float, weight_decay: float, width: int, num_queries: int, num_heads: int,
                        seed: int = 0, description: str | None = None) -> FittedAttentiveProbe:
    """Train an attentive probe on tokens (M, N, D) (any float dtype) -> targets (M, K) with MSE;
    `description` labels a progress bar (none without it)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = AttentiveProbe(tokens.shape[-1], tokens.shape[1], targets.shape[1], width, num_queries, num_heads)
    target_scale = Standardiser.fit(targets.double())
    scaled_targets = target_scale.forward(targets.double()).float()
    token_scale = tokens[:256].float().std().item() or 1.0  # one global scale keeps tokens near unit size
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    module.train()
    for step in tqdm(range(steps), desc=description, unit="step", disable=description is None, dynamic_ncols=True):
        set_learning_rate(optimizer, learning_rate(step, steps, lr))
        batch = torch.randint(len(tokens), (min(batch_size, len(tokens)),), generator=generator)
        loss = nn.functional.mse_loss(module(tokens[batch].float() / token_scale), scaled_targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return FittedAttentiveProbe(module, target_scale, token_scale)
