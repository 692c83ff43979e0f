"""Reacher: dm_control's two-link planar arm, target hidden; reach the goal image's joint angles.

Success when every joint is within 0.05 rad of the goal's (docs/protocol.md, reacher). The
published figures use the unwrapped angle error (raw qpos difference); `angle_error="wrapped"`
measures it modulo 2*pi instead. Both are available from `joint_errors`.
"""
from __future__ import annotations

import numpy as np

from envs.base import PixelTask


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Map angles to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


class Reacher(PixelTask):
    """Observation pixels from the top-down `fixed` camera; proprio = (qpos(2), qvel(2))."""

    domain = "reacher"
    dm_task = "easy"
    hidden_geoms = ("target",)
    success_threshold = 0.05  # rad, every joint
    angular_positions = True

    def __init__(self, angle_error: str = "unwrapped", **kwargs):
        if angle_error not in ("unwrapped", "wrapped"):
            raise ValueError(f"angle_error={angle_error!r} is invalid; expected 'unwrapped' or 'wrapped'")
        self.angle_error = angle_error
        kwargs.setdefault("action_repeat", 2)
        super().__init__(**kwargs)

    def joint_errors(self, states, goal_state) -> dict[str, np.ndarray]:
        """Absolute per-joint angle errors (..., 2), both wrapped and unwrapped."""
        difference = np.asarray(states)[..., : self.nq] - np.asarray(goal_state)[: self.nq]
        return {"unwrapped": np.abs(difference), "wrapped": np.abs(wrap_angle(difference))}

    def distances(self, states, goal_state) -> np.ndarray:
        """Largest per-joint angle error (rad), so success <=> distance < 0.05: (...,)."""
        return self.joint_errors(states, goal_state)[self.angle_error].max(axis=-1)
