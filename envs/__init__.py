"""Goal-conditioned MuJoCo pixel tasks, offline data collection and the dataset format.

Importing this package sets `MUJOCO_GL` (egl, else osmesa) unless the user already set it.
"""
from envs.rendering import configure_mujoco_gl

configure_mujoco_gl()

from envs.registry import list_tasks, make, make_from_config  # noqa: E402

__all__ = ["list_tasks", "make", "make_from_config"]
