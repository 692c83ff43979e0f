"""Holding an end-effector arm still: the amortized agent's hold at a reached goal (issue 28).

OGBench's cube arm takes each action as a target relative to its *measured* pinch position, and its PD controller
sits below any target under gravity: a zero action is not a hold. The pinch sinks about 1 mm per step (4-6 cm over
30 steps with the arm lifted), so a cube held in the air at its goal drifts out of the 4 cm success radius.

`EffectorHold` keeps the pinch where it was when the hold began instead: a PI controller in end-effector space on
the pinch position that the arm's joint angles (its proprio) give through the robot's kinematics
(`agent/kinematics.py`). On the simulator, with the arm lifted, it keeps the pinch within a millimetre of the
latched position over 30 steps where zero actions let it sink 4-6 cm (docs/experiments.md section 29; the test:
tests/agent/test_effector_hold.py).

The gripper's action is relative to its measured opening too: a zero command sets the target where the fingers are,
so they stop squeezing, and a grasp that the policy's last actions loosened lets the cube slide out and fall (it
dropped 2 of the 24 cubes lost on the tuning seeds after a latch). With `gripper_index` and `grasping` (the task's),
rows whose gripper holds something when they latch keep squeezing (+1), the others leave it as it is (0)
(docs/experiments.md section 32).

    hold = EffectorHold(chain, action_scale=task.effector_action_scale, action_dim=5,
                        gripper_index=task.gripper_action_index, grasping=task.grasping)
    hold.reset(batch)
    hold.latch(rows, states)            # rows (B,) bool: start holding these where they are now
    hold.latch(rows, states, offsets)   # ... or there plus offsets (B, 3) metres
    actions = hold.actions(states)      # (B, A) for every row that holds (the others: zeros); yaw 0
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from agent.kinematics import SerialChain


class EffectorHold:
    """A PI controller on the effector's position (module docstring). `action_scale`: metres of effector target
    per unit of the action's x, y, z; `integral_gain`: the share of the summed position error added to each target
    (it cancels the PD controller's sag under gravity); `gripper_index`: the action's gripper entry, and
    `grasping(states (B, S)) -> (B,) bool` whether a row's gripper holds something (None: the gripper's action 0)."""

    def __init__(self, chain: SerialChain, action_scale: float, action_dim: int, integral_gain: float = 0.3,
                 gripper_index: int | None = None, grasping: Callable[[np.ndarray], np.ndarray] | None = None):
        if not action_scale > 0 or not integral_gain >= 0 or action_dim < 3:
            raise ValueError(f"an effector hold of action_scale={action_scale}, integral_gain={integral_gain}, "
                             f"action_dim={action_dim} is invalid; "
                             "expected a scale > 0, a gain >= 0 and x, y, z actions")
        no_gripper = gripper_index is None
        if no_gripper != (grasping is None) or not (no_gripper or 3 <= gripper_index < action_dim):
            raise ValueError(f"an effector hold of gripper_index={gripper_index} is invalid; "
                             f"expected None, or an index in [3, {action_dim}) of the action with the task's grasping")
        self.chain, self.action_scale, self.action_dim = chain, float(action_scale), int(action_dim)
        self.integral_gain = float(integral_gain)
        self.gripper_index, self.grasping = gripper_index, grasping
        self.holding = np.zeros(0, dtype=bool)

    def reset(self, batch: int) -> None:
        self.holding = np.zeros(batch, dtype=bool)    # (B,)
        self.targets = np.zeros((batch, 3))          # (B, 3) the latched pinch positions, metres
        self.error_sums = np.zeros((batch, 3))       # (B, 3)
        self.grip_commands = np.zeros(batch)         # (B,) +1: squeeze what the gripper holds; 0: leave it

    def effector_positions(self, states: np.ndarray) -> np.ndarray:
        """states (B, S) -> the pinch positions (B, 3) that their joint angles give."""
        angles = torch.as_tensor(states[:, list(self.chain.qpos_addresses)], dtype=torch.float32)  # (B, J)
        return self.chain(angles).double().numpy()

    def latch(self, rows: np.ndarray, states: np.ndarray, offsets: np.ndarray | None = None) -> None:
        """Start holding `rows` (B,) bool at their present pinch positions, moved by `offsets` (B, 3) metres where
        given (a carried cube placed at its goal); rows already holding keep their targets."""
        new = rows & ~self.holding
        if new.any():
            self.targets[new] = self.effector_positions(states)[new]
            if offsets is not None:
                self.targets[new] += offsets[new]
            self.error_sums[new] = 0.0
            if self.grasping is not None:
                self.grip_commands[new] = self.grasping(states)[new].astype(float)
            self.holding = self.holding | new

    def actions(self, states: np.ndarray) -> np.ndarray:
        """states (B, S) -> actions (B, A) in [-1, 1] that pull every holding row's pinch back to its target."""
        actions = np.zeros((len(states), self.action_dim), dtype=np.float32)  # (B, A)
        if not self.holding.any():
            return actions
        error = self.targets - self.effector_positions(states)  # (B, 3)
        self.error_sums[self.holding] += error[self.holding]
        correction = error + self.integral_gain * self.error_sums  # (B, 3) metres
        actions[self.holding, :3] = np.clip(correction[self.holding] / self.action_scale, -1.0, 1.0)
        if self.gripper_index is not None:
            actions[self.holding, self.gripper_index] = self.grip_commands[self.holding]
        return actions
