"""The V-JEPA pretraining model, built from transformers' VJEPA2 modules.

- context encoder (`context_model.encoder`): patch-embeds the clip, keeps only the visible (context)
  tokens and runs the encoder layers on them with RoPE positions of those tokens;
- predictor (`context_model.predictor`, transformers' narrow `VJEPA2Predictor`): from the context
  tokens plus positional mask tokens, predicts the target encoder's tokens at the masked positions;
- target encoder: an exponential moving average of the context encoder, run on the whole clip
  without gradients; its outputs are layer-normed (as in V-JEPA) and are the regression targets
  (with `target_layers` K > 1, the mean of its last K blocks' layer-normed outputs, as data2vec).
Loss: L1 in representation space, averaged over the mask families, plus an optional VICReg-style
variance-covariance penalty on the context tokens (as C-JEPA adds to I-JEPA) that keeps the encoder
from collapsing onto a few directions. `export()` is a complete
`VJEPA2Model` whose encoder is the EMA target encoder (what V-JEPA keeps) and whose predictor is ours.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import VJEPA2Config, VJEPA2Model


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens, (B, K) indices -> (B, K, D)."""
    return torch.gather(tokens, 1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def variance_covariance(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg terms of tokens (..., D), over all tokens: mean hinge of each dimension's std below 1,
    and the sum of squared off-diagonal covariances divided by D."""
    features = tokens.reshape(-1, tokens.shape[-1]).float()  # (M, D)
    features = features - features.mean(dim=0)
    variance = torch.relu(1.0 - (features.var(dim=0) + 1e-4).sqrt()).mean()
    covariance = features.T @ features / (len(features) - 1)  # (D, D)
    off_diagonal = covariance - torch.diag(torch.diag(covariance))
    return variance, off_diagonal.pow(2).sum() / features.shape[1]


class VJEPAPretrainingModel(nn.Module):
    """Context encoder + predictor (trained) and EMA target encoder; inputs are preprocessed clips
    `pixels float (B, T, 3, S, S)` (see `world_model.encoder.preprocess_frames`)."""

    def __init__(self, config: VJEPA2Config, variance_weight: float = 0.0, covariance_weight: float = 0.0,
                 target_layers: int = 1):
        super().__init__()
        if not 1 <= target_layers <= config.num_hidden_layers:
            raise ValueError(f"target_layers must be in [1, {config.num_hidden_layers}] (the encoder's "
                             f"num_hidden_layers), got {target_layers}")
        self.config = config
        self.target_layers = target_layers
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.context_model = VJEPA2Model(config)
        self.target_encoder = copy.deepcopy(self.context_model.encoder).requires_grad_(False)

    def encode_context(self, pixels: torch.Tensor, context_ids: torch.Tensor) -> torch.Tensor:
        """Context encoder on the visible tokens only: -> (B, Nc, D)."""
        encoder = self.context_model.encoder
        tokens = gather_tokens(encoder.embeddings(pixels), context_ids)  # (B, Nc, D)
        for layer in encoder.layer:
            tokens = layer(tokens, context_ids)[0]  # RoPE at the kept tokens' positions
        return encoder.layernorm(tokens)

    @torch.no_grad()
    def encode_targets(self, pixels: torch.Tensor) -> torch.Tensor:
        """Target encoder on every token, layer-normed: -> (B, N, D). With K = `target_layers` > 1, the
        layer-normed mean of the last K blocks' layer-normed outputs."""
        if self.target_layers == 1:
            tokens = self.target_encoder(pixels).last_hidden_state  # (B, N, D)
            return F.layer_norm(tokens, tokens.shape[-1:])
        tokens = self.target_encoder.embeddings(pixels)  # (B, N, D)
        block_outputs = []
        for layer in self.target_encoder.layer:
            tokens = layer(tokens, None)[0]
            block_outputs.append(F.layer_norm(tokens.float(), tokens.shape[-1:]))
        mean = torch.stack(block_outputs[-self.target_layers:]).mean(0)  # (B, N, D)
        return F.layer_norm(mean, mean.shape[-1:])

    def predict(self, context_tokens: torch.Tensor, context_ids: torch.Tensor,
                target_ids: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Predictor: (B, Nc, D) context tokens -> (B, Nt, D) predictions at `target_ids`."""
        # transformers' predictor gathers the context from a full-length sequence itself
        batch, _, dim = context_tokens.shape
        placed = context_tokens.new_zeros(batch, num_tokens, dim).scatter(
            1, context_ids.unsqueeze(-1).expand(-1, -1, dim), context_tokens)  # (B, N, D)
        return self.context_model.predictor(placed, [context_ids], [target_ids]).last_hidden_state

    def loss(self, pixels: torch.Tensor,
             masks: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over mask families of (context_ids (B, Nc), target_ids (B, Nt)) pairs of the L1 between
        predicted and target tokens, plus the weighted variance-covariance penalty of the context tokens.

        Returns (scalar loss, target tokens (B, N, D)) so callers can log representation statistics.
        """
        targets = self.encode_targets(pixels)  # (B, N, D)
        losses = []
        for context_ids, target_ids in masks:
            context = self.encode_context(pixels, context_ids)  # (B, Nc, D)
            predicted = self.predict(context, context_ids, target_ids, targets.shape[1])  # (B, Nt, D)
            loss = (predicted.float() - gather_tokens(targets, target_ids).float()).abs().mean()
            if self.variance_weight or self.covariance_weight:
                variance, covariance = variance_covariance(context)
                loss = loss + self.variance_weight * variance + self.covariance_weight * covariance
            losses.append(loss)
        return torch.stack(losses).mean(), targets

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * context encoder, for every parameter."""
        context_parameters = self.context_model.encoder.parameters()
        for target, context in zip(self.target_encoder.parameters(), context_parameters):
            target.lerp_(context, 1.0 - momentum)

    def trainable_parameter_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: weight decay on matrices, none on biases, norms and mask tokens."""
        decay, no_decay = [], []
        for name, parameter in self.context_model.named_parameters():
            (decay if parameter.ndim >= 2 and "mask_tokens" not in name else no_decay).append(parameter)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def export(self) -> VJEPA2Model:
        """A standalone `VJEPA2Model`: EMA target encoder + predictor, ready for `save_pretrained`."""
        exported = copy.deepcopy(self.context_model).cpu().eval()
        exported.encoder.load_state_dict(self.target_encoder.state_dict())
        return exported
