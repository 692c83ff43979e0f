"""World model: the frozen V-JEPA encoder, its in-domain pretraining and probes, the latent cache and
the action-conditioned latent predictor. Imports stay light: heavy modules load on first use."""
from __future__ import annotations


def load_encoder(source: str, **options):
    """`world_model.encoder.load_encoder`: a `FrozenEncoder` from a hub id, weights dir or pretrain dir."""
    from world_model.encoder import load_encoder as load

    return load(source, **options)
