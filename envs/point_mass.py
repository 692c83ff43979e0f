"""Point mass: dm_control's actuated mass in a walled plane, target hidden; reach the goal position.

Success when the mass is within the target's radius (0.015 m in dm_control's `easy` task) of the
goal state's position. The mass is 1-2 px wide at 64 px: use 96-128 px images.
"""
from __future__ import annotations

import numpy as np

from envs.base import PixelTask


class PointMass(PixelTask):
    """Observation pixels from the top-down `fixed` camera; proprio = (qpos(2), qvel(2))."""

    domain = "point_mass"
    dm_task = "easy"
    hidden_geoms = ("target",)

    def __init__(self, **kwargs):
        kwargs.setdefault("image_size", 96)
        super().__init__(**kwargs)
        model = self._physics.model
        self.success_threshold = float(model.geom_size[model.name2id("target", "geom"), 0])

    def distances(self, states, goal_state) -> np.ndarray:
        """Euclidean distance (m) between the mass positions: (...,)."""
        return np.linalg.norm(np.asarray(states)[..., : self.nq] - np.asarray(goal_state)[: self.nq], axis=-1)
