"""Goal-conditioned MuJoCo pixel tasks, offline data collection and the dataset format.

Importing this package sets `MUJOCO_GL` (egl, else osmesa) unless the user already set it, and registers
every task with Gymnasium as `jepa_agent/<Name>-v0` (`gymnasium.make("jepa_agent/Reacher-v0", image_size=64)`).
"""
from envs.rendering import configure_mujoco_gl

configure_mujoco_gl()

from envs.registry import gymnasium_id, list_tasks, make, make_from_config, register_with_gymnasium  # noqa: E402

register_with_gymnasium()  # gymnasium.make("jepa_agent/Reacher-v0", image_size=64)

__all__ = ["gymnasium_id", "list_tasks", "make", "make_from_config"]
