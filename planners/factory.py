"""Build a planner from the `planner` config group (configs/planner/{cem,mppi,icem}.yaml).

Swapping planners is a config change: `planner=cem`, `planner=mppi` or `planner=icem`. Keys read here:
name, horizon, samples, iterations, init_std, min_std, low, high, seed, plus top_k (cem), temperature
(mppi), or top_k, noise_beta, keep_fraction, momentum and steps_per_block (icem). How the agent executes
the plans (blocks executed before replanning, a shrinking horizon) is the `mpc` section's (configs/mpc/).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from planners.base import SamplingPlanner
from planners.cem import CEMPlanner
from planners.icem import ICEMPlanner
from planners.mppi import MPPIPlanner

PLANNERS: dict[str, tuple[type[SamplingPlanner], tuple[str, ...]]] = {
    "cem": (CEMPlanner, ("top_k",)),
    "mppi": (MPPIPlanner, ("temperature",)),
    "icem": (ICEMPlanner, ("top_k", "noise_beta", "keep_fraction", "momentum", "steps_per_block")),
}
SHARED_KEYS = ("horizon", "samples", "iterations", "init_std", "min_std", "low", "high", "seed")
INTEGER_KEYS = ("horizon", "samples", "iterations", "seed", "top_k", "steps_per_block")


def make_planner(
    cfg_planner: Mapping[str, Any], action_dim: int, device: str | torch.device = "cpu"
) -> SamplingPlanner:
    """Planner named by `cfg_planner.name` (cem | mppi | icem) with the node's settings; action_dim = block * A."""
    name = cfg_planner.get("name")
    if name not in PLANNERS:
        raise ValueError(f"planner.name={name!r}: expected one of {sorted(PLANNERS)}")
    planner_class, own_keys = PLANNERS[name]
    settings = {key: cfg_planner[key] for key in (*SHARED_KEYS, *own_keys) if key in cfg_planner}
    for key, value in settings.items():
        kinds = int if key in INTEGER_KEYS else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValueError(f"planner.{key}={value!r}: expected {'an integer' if key in INTEGER_KEYS else 'a number'}")
    try:
        return planner_class(action_dim, device=device, **settings)
    except ValueError as error:  # the planners name their own arguments: name them as config keys
        raise ValueError(f"planner.{error}") from None
