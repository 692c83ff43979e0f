"""Behaviour policies for offline data collection.

Uniformly random reacher actions rarely move the arm far (they average out); temporally correlated
actions cover the workspace better, and point_mass needs them to travel at all. A task may bring its
own `scripted_policy(rng, **settings)` (the cube's noisy pick-and-place oracle): `kind: scripted`.

    policy = make_policy(policy_cfg, action_dim, rng, task); task.reset(...); policy.reset(); policy() -> (A,)
"""
from __future__ import annotations

import numpy as np


class UniformRandomPolicy:
    """a_t ~ U[-1, 1]^A independently every step."""

    def __init__(self, action_dim: int, rng: np.random.Generator):
        self.action_dim, self.rng = action_dim, rng

    def reset(self) -> None:
        pass

    def __call__(self) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)


class CorrelatedRandomPolicy:
    """AR(1) noise, clipped: x_t = p * x_{t-1} + sqrt(1 - p^2) * scale * eps_t, eps ~ N(0, I), and
    a_t = clip(x_t, -1, 1) (the process carries the unclipped x).

    `persistence` p in [0, 1) sets the correlation time (~1 / (1 - p) steps); the stationary
    std of the unclipped process is `scale`.
    """

    def __init__(self, action_dim: int, rng: np.random.Generator, persistence: float = 0.9, scale: float = 1.0):
        if not 0.0 <= persistence < 1.0:
            raise ValueError(f"persistence={persistence!r} is invalid; expected a float in [0, 1)")
        if scale <= 0:
            raise ValueError(f"scale={scale!r} is invalid; expected a positive float")
        self.action_dim, self.rng = action_dim, rng
        self.persistence, self.scale = float(persistence), float(scale)
        self.previous = np.zeros(action_dim)

    def reset(self) -> None:
        self.previous = self.rng.normal(0.0, self.scale, self.action_dim)

    def __call__(self) -> np.ndarray:
        innovation = self.rng.normal(0.0, self.scale, self.action_dim)
        unclipped = self.persistence * self.previous + np.sqrt(1 - self.persistence**2) * innovation
        self.previous = unclipped
        return np.clip(unclipped, -1.0, 1.0).astype(np.float32)


SETTINGS = {"uniform": (), "correlated": ("persistence", "scale"),
            "scripted": ("noise", "noise_smoothing", "random_fraction")}


def check_policy(policy_cfg, task_cls) -> tuple[str, dict]:
    """(kind, settings) of a policy config, checked against the task class; one-line errors."""
    settings = dict(policy_cfg)
    kind = settings.pop("kind", None)
    if kind not in SETTINGS:
        raise ValueError(f"collect.policy.kind={kind!r} is invalid; expected one of {', '.join(map(repr, SETTINGS))}")
    if kind == "scripted" and not hasattr(task_cls, "scripted_policy"):
        raise ValueError(f"collect.policy.kind='scripted' is invalid for {task_cls.__name__}, which has no scripted "
                         "policy; expected 'uniform' or 'correlated'")
    if kind != "correlated":  # persistence and scale (in the default config) are the correlated policy's: ignored
        settings = {key: value for key, value in settings.items() if key not in SETTINGS["correlated"]}
    unknown = sorted(set(settings) - set(SETTINGS[kind]))
    if unknown:
        raise ValueError(f"collect.policy has unknown keys {unknown}; expected kind, "
                         f"{', '.join(SETTINGS[kind] or SETTINGS['correlated'])}")
    return kind, settings


def make_policy(policy_cfg, action_dim: int, rng: np.random.Generator, task):
    """Build the policy named by `policy_cfg.kind` (`uniform` | `correlated` | `scripted`) for `task`."""
    kind, settings = check_policy(policy_cfg, type(task))
    if kind == "uniform":
        return UniformRandomPolicy(action_dim, rng)
    if kind == "scripted":
        return task.scripted_policy(rng, **settings)
    return CorrelatedRandomPolicy(action_dim, rng, **settings)
