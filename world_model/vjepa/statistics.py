"""Representation statistics that reveal collapse, and the CSV log of pretraining metrics.

A collapsing JEPA maps every input to (nearly) the same tokens: the per-dimension standard deviation
falls towards zero and the effective rank (RankMe: exp of the entropy of the normalised singular
values) falls towards 1. Healthy representations keep both well away from zero.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import torch

from bookkeeping.io import atomic_write_text


def representation_statistics(tokens: torch.Tensor) -> dict[str, float]:
    """tokens (..., D) -> mean and min per-dimension std, and effective rank (1 .. D)."""
    features = tokens.detach().reshape(-1, tokens.shape[-1]).float()  # (M, D)
    per_dim_std = features.std(dim=0)
    singular_values = torch.linalg.svdvals(features - features.mean(dim=0))
    weights = singular_values / singular_values.sum().clamp_min(1e-12)
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum()
    return {"token_std": per_dim_std.mean().item(), "min_dim_std": per_dim_std.min().item(),
            "effective_rank": entropy.exp().item()}


class MetricsLog:
    """Rows of metrics keyed by step, rewritten atomically to a CSV file after every append.

    Reopening an existing log keeps the rows up to `keep_until_step`: after a resume from a
    checkpoint, rows of steps that were trained but lost with the kill are dropped and redone.
    """

    def __init__(self, path: str | os.PathLike, fields: list[str], keep_until_step: int | None = None):
        self.path = Path(path)
        self.fields = ["step", *fields]
        self.rows: list[dict[str, str]] = []
        if self.path.exists() and keep_until_step is not None:
            with open(self.path, newline="") as handle:
                self.rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= keep_until_step]

    def append(self, step: int, metrics: dict[str, float]) -> None:
        unknown = set(metrics) - set(self.fields)
        if unknown:
            raise ValueError(f"metrics {sorted(unknown)} are not columns of {self.path.name}: {self.fields}")
        row = {field: "" for field in self.fields}
        row.update({name: f"{value:.6g}" for name, value in metrics.items()}, step=str(step))
        self.rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())
