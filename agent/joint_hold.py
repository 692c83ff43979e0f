"""Holding a torque-driven arm at its goal: PD control of the joints once they reach the goal's (issue 28).

The reacher's arm is driven by joint torques and coasts. Neither the goal policy (it imitates a behaviour policy that
never stops) nor a short CEM search (300 x 10) finds the actions that stop it at the goal, so it swings through:
held 13% and 60% against 94% for CEM 300 x 30 (docs/experiments.md section 40). `JointHold` wraps an agent whose
world reads the goal's joint positions from the goal image (`LatentWorld.goal_positions`: the position readout's
reading, or the nearest training frames'). At the first task step where every joint the robot senses lies within
`radius` of the goal's, that env stops following the agent, and a PD controller holds its joints there for the rest
of the episode:

    action = clip(position_gain * wrap(goal joints - joints) - velocity_gain * joint velocities, -1, 1)   # (B, A)

One control step of a full action changes a reacher joint's velocity by several rad/s, so strong gains overshoot and
the arm swings from bound to bound; position_gain 1 and velocity_gain 0.1 held all of 100 simulated arms started up to
0.1 rad from a goal at joint velocities drawn with a 2 rad/s std, gains of 5 and 0.5 or more held 0-2%
(docs/experiments.md section 44).

    agent = JointHold(inner, radius=0.1, position_gain=1.0, velocity_gain=0.1, joints=2)
    agent.reset(goal_images, goal_states, seeds); action = agent.act(pixels, states)   # as `inner`'s

The wrapped agent still acts (plans) at every step while any env of the batch follows it, its actions ignored where the
hold has latched (its context stays its own); once every env holds, it is no longer asked. `plans` are the wrapped
agent's records, which the evaluation reports as its plan times; a held env's record and video caption still show the
energies of the plans made after it latched. `inner` is the wrapped agent (its planner, its world).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from agent.mpc import Agent, PlanRecord, check_observation
from agent.stages import LATENT_AGENTS
from agent.worlds import LatentWorld
from bookkeeping.checks import check_numbers

HOLDING_AGENTS = LATENT_AGENTS  # the agents whose world reads the goal's joints


class JointHold:
    """`inner` until the joints reach the goal's, then PD control (module docstring). `joints`: the arm's joint
    count J; its states are the joints' positions (J) then velocities (J), and its actions one torque per joint."""

    def __init__(self, inner: Agent, radius: float, position_gain: float, velocity_gain: float, joints: int):
        world = getattr(inner, "world", None)
        if not isinstance(world, LatentWorld) or not world.position_weight:
            raise ValueError("evaluate.joint_hold needs an agent whose world reads the goal's joints from the goal "
                             f"image; got {type(world).__name__} with position_weight="
                             f"{getattr(world, 'position_weight', None)}; expected a latent world and "
                             "evaluate.energy.position_weight > 0")
        readout = world.position_readout.config
        if readout.positions != joints or readout.qpos_indices is not None:
            raise ValueError(f"evaluate.joint_hold needs a position readout of the arm's {joints} joints; this one "
                             f"reads {readout.positions} positions (qpos_indices={readout.qpos_indices})")
        if not radius > 0 or position_gain < 0 or velocity_gain < 0:
            raise ValueError(f"evaluate.joint_hold radius={radius}, position_gain={position_gain}, velocity_gain="
                             f"{velocity_gain} are invalid; expected a radius > 0 and gains >= 0")
        self.inner, self.world = inner, world
        self.radius, self.position_gain, self.velocity_gain = float(radius), float(position_gain), float(velocity_gain)
        self.joints = int(joints)
        self.batch: int | None = None  # B, set by reset
        self.holding = np.zeros(0, dtype=bool)  # (B,)

    @property
    def plans(self) -> list[PlanRecord]:
        return self.inner.plans

    def reset(self, goal_images: np.ndarray, goal_states: np.ndarray | None, seeds: Sequence[int]) -> None:
        self.inner.reset(goal_images, goal_states, seeds)
        self.batch = len(goal_images)
        self.holding = np.zeros(self.batch, dtype=bool)

    def act(self, pixels: np.ndarray, states: np.ndarray) -> np.ndarray:
        check_observation(self.batch, pixels, states, self.world.state_dim)
        to_goal = self.to_goal(states[:, : self.joints])  # (B, J)
        self.holding |= np.abs(to_goal).max(axis=-1) <= self.radius
        velocities = states[:, self.joints : 2 * self.joints]  # (B, J)
        hold = np.clip(self.position_gain * to_goal - self.velocity_gain * velocities, -1.0, 1.0)  # (B, J)
        if self.holding.all():  # the agent's actions would all be ignored: it is not asked (no plan is made)
            return hold.astype(np.float32)
        action = self.inner.act(pixels, states)  # (B, A)
        return np.where(self.holding[:, None], hold, action).astype(action.dtype)

    @torch.no_grad()
    def to_goal(self, joints: np.ndarray) -> np.ndarray:
        """joints (B, J) -> (B, J): the goal's joints as the world reads them minus these (angles wrapped)."""
        goal = self.world.goal_positions.double()  # (B, J)
        joints = torch.as_tensor(joints, dtype=torch.float64, device=goal.device)
        return -self.world.position_readout.position_error(joints, goal).cpu().numpy()


def joint_hold_agents(settings) -> tuple[str, ...]:
    """`evaluate.joint_hold`, checked: the agents it wraps (a list of distinct names of HOLDING_AGENTS), a radius > 0
    and gains >= 0."""
    agents = settings.agents
    names = list(agents) if isinstance(agents, Sequence) and not isinstance(agents, str) else None
    if names is None or any(name not in HOLDING_AGENTS for name in names) or len(set(names)) != len(names):
        raise ValueError(f"evaluate.joint_hold.agents={agents!r} is invalid; expected a list of distinct names "
                         f"of {list(HOLDING_AGENTS)}, or [] (off)")
    check_numbers(settings, "evaluate.joint_hold", ("radius",), positive=True)
    check_numbers(settings, "evaluate.joint_hold", ("position_gain", "velocity_gain"))
    return tuple(names)
