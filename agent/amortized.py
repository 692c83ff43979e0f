"""The amortized agent: the goal-conditioned policy (world_model.goal_policy) acts without planning.

    propose = PolicyProposer(policy, position_readout, latent_readout, world)   # readouts: None where not read
    agent = AmortizedAgent(world, propose, block, action_dim)
    agent.reset(goal_images (B, H, W, 3), None, seeds (B,)); actions = agent.act(pixels, states)   # (B, A)

At every block boundary the world (a `LatentWorld`: the frozen encoder) embeds the frame, the policy
maps it and the goal image to an action chunk, and the agent executes the chunk's first block (one MLP
call per block instead of CEM's samples x iterations predictor rollouts). Each call is recorded as a
plan (its latency; no energy), so that the evaluation reports it as it reports a planner's. With
`evaluate.energy.goal_positions=nearest_frames` the policy reads the goal's positions as the world's position term
does, from the training frames nearest the goal image (world_model/nearest_frames.py), instead of the position
readout's reading of it: on the point mass (readout 7.6 mm median, nearest frames 1.0 mm) held 79.3 -> 94.7%,
reached 96.0 -> 100% on seeds 0-2 (docs/experiments.md section 39).

With an `EffectorHold` (`evaluate.effector_hold.radius` > 0: the cube), the agent stops following the policy at
the first task step where the cube lies within `hold_radius` of the goal image's cube, and holds the effector where
it is for the rest of the episode: the policy carries the cube through its goal, and OGBench's arm sinks under a zero
action (agent/effector_hold.py). Where the cube is now: the position readout of the frame (embedded at every step
for this check; the policy still acts once per block), except where the gripper holds it and the readout reads it
within `carried_radius` of the pinch: there it is the pinch, from the arm's joints (its readout errs by 2.8 cm at the
90th percentile on carried cubes, the pinch by 1.2 cm). The goal's cube is the readout of the goal image. With
`place_carried`, a cube carried when the hold latches is placed at the goal as read: the pinch's target moves by
the read offset from the cube to the goal's cube (at most `hold_radius`), halving the held cubes' median distance
to their goals on the tuning seeds (docs/experiments.md section 37).

`PolicyProposer` is also CEM's warm start (`evaluate.agent=amortized_cem`): `MPCAgent(warm_start=...)`
starts every plan from the policy's chunk instead of the shifted last plan.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from agent.effector_hold import EffectorHold
from agent.mpc import PlanRecord, check_batch, check_observation
from agent.worlds import LatentWorld
from world_model.goal_policy import GoalPolicy, frame_readouts
from world_model.latent_readout import LatentReadout
from world_model.position_readout import PositionReadout


class PolicyProposer:
    """The policy's action chunk for the world's latest observation and goal. The readouts are those the policy
    was trained on (None: not read). With `goal_from_world`, the goal's positions are the world's
    (`LatentWorld.goal_positions`: its goal position reader's, the nearest training frames') instead of the position
    readout's."""

    def __init__(self, policy: GoalPolicy, position_readout: PositionReadout | None,
                 latent_readout: LatentReadout | None, world: LatentWorld, goal_from_world: bool = False):
        if goal_from_world and (position_readout is None or not world.position_weight):
            readout = "none" if position_readout is None else "one"
            raise ValueError(f"the goal policy reads the goal's positions from the world's goal position reader "
                             f"(evaluate.energy.goal_positions=nearest_frames), but got position_weight="
                             f"{world.position_weight} and {readout} position readout; expected a position readout "
                             f"and evaluate.energy.position_weight > 0")
        self.policy, self.world = policy, world
        self.position_readout, self.latent_readout = position_readout, latent_readout
        self.goal_from_world = goal_from_world
        self.goal_tokens: torch.Tensor | None = None     # the goal whose readout features are kept
        self.goal_readout: torch.Tensor | None = None    # (B, R + O)
        self.goal_positions_of: torch.Tensor | None = None  # the goal whose read-out positions are kept
        self.goal_positions: torch.Tensor | None = None  # (B, R) in task units

    @torch.no_grad()
    def __call__(self, horizon: int | None = None) -> torch.Tensor:
        """-> (B, horizon, block*A) in [-1, 1]: the policy's chunk, cut to `horizon` blocks or padded by
        repeating its last block (None: the chunk as it is)."""
        world = self.world
        if self.goal_tokens is not world.goal_tokens:  # a new goal (reset): read it once
            self.goal_tokens = world.goal_tokens
            self.goal_readout = frame_readouts(self.position_readout, self.latent_readout, world.goal_tokens,
                                               world.goal_latents)  # (B, R + O)
            if self.goal_from_world:  # the position part as the world reads the goal's positions
                positions = self.position_readout.targets(self.read_goal_positions().float())  # (B, R)
                self.goal_readout = torch.cat([positions, self.goal_readout[:, positions.shape[1]:]], dim=-1)
        proprio = world.context_proprio[-1] if world.context_proprio else None  # (B, P) standardised
        readout = frame_readouts(self.position_readout, self.latent_readout, world.frame_tokens,
                                 world.context_latents[-1])  # (B, R + O)
        chunk = self.policy(world.context_latents[-1], world.goal_latents, proprio, readout, self.goal_readout)
        if horizon is None:
            return chunk
        padding = chunk[:, -1:].expand(-1, max(0, horizon - chunk.shape[1]), -1)
        return torch.cat([chunk[:, :horizon], padding], dim=1)  # (B, horizon, block*A)

    @torch.no_grad()
    def read_positions(self, frame_tokens: torch.Tensor) -> np.ndarray:
        """Encoder tokens (B, N_enc, D) -> (B, R): the positions the position readout reads (task units)."""
        return self.position_readout(frame_tokens).double().cpu().numpy()

    @torch.no_grad()
    def read_goal_positions(self) -> torch.Tensor:
        """-> (B, R): the goal image's positions (task units), read once per goal (`goal_from_world`: the world's)."""
        if self.goal_positions_of is not self.world.goal_tokens:  # a new goal (reset)
            self.goal_positions_of = self.world.goal_tokens
            self.goal_positions = (self.world.goal_positions if self.goal_from_world
                                   else self.position_readout(self.world.goal_tokens))  # (B, R)
        return self.goal_positions

    @torch.no_grad()
    def goal_distance(self, positions: np.ndarray) -> np.ndarray:
        """positions (B, R) -> (B,): how far they lie from the positions read from the goal image (task units)."""
        goal = self.read_goal_positions()
        positions = torch.as_tensor(positions, dtype=goal.dtype, device=goal.device)
        error = self.position_readout.position_error(positions, goal)  # (B, R)
        return error.float().norm(dim=-1).cpu().numpy()

    @torch.no_grad()
    def to_goal(self, positions: np.ndarray) -> np.ndarray:
        """positions (B, R) -> (B, R): the goal image's read positions minus them (angles wrapped; task units)."""
        goal = self.read_goal_positions().double().cpu()
        return -self.position_readout.position_error(torch.as_tensor(positions, dtype=torch.float64), goal).numpy()


@dataclass
class AmortizedAgent:
    world: LatentWorld
    propose: PolicyProposer
    block: int                   # task steps per action block
    action_dim: int              # A
    hold: EffectorHold | None = None  # with hold_radius > 0: holds the effector at a reached goal (module docstring)
    hold_radius: float = 0.0     # task units of the position readout
    carried_radius: float = 0.0  # > 0: a cube in the gripper read within it of the pinch is where the pinch is
    place_carried: bool = False  # a carried cube is held where the goal image's cube is read, not where it latched
    plans: list[PlanRecord] = field(default_factory=list)
    batch: int | None = field(default=None, init=False)  # B, set by reset

    def __post_init__(self):
        hold_unreadable = self.hold is None or self.propose.position_readout is None
        if self.hold_radius < 0 or (self.hold_radius > 0 and hold_unreadable):
            raise ValueError(f"evaluate.effector_hold.radius={self.hold_radius} is invalid here; expected 0, or > 0 "
                             "with a task that has an effector and a goal policy that reads the position readout")
        carry_unsensed = not self.hold_radius or self.hold.grasping is None
        if self.carried_radius < 0 or (self.carried_radius > 0 and carry_unsensed):
            raise ValueError(f"evaluate.effector_hold.carried_radius={self.carried_radius} is invalid here; "
                             "expected 0, or > 0 with a hold radius > 0 and a task that senses what its gripper holds")

    def reset(self, goal_images: np.ndarray, goal_states: np.ndarray | None, seeds: Sequence[int]) -> None:
        """Goal states are not read (the goal is its image); seeds neither: the policy is deterministic."""
        self.batch = check_batch(goal_images, goal_states, seeds, self.world.state_dim)
        self.world.set_goal(goal_images, goal_states)
        self.queue = np.zeros((self.batch, 0, self.action_dim), dtype=np.float32)  # (B, steps, A) to execute
        self.current_block: list[np.ndarray] = []  # actions executed since the last block boundary
        self.step = 0
        self.plans = []
        if self.hold is not None:
            self.hold.reset(self.batch)

    def act(self, pixels: np.ndarray, states: np.ndarray) -> np.ndarray:
        check_observation(self.batch, pixels, states, self.world.state_dim)
        self.world.check_frames(pixels)
        if self.step % self.block == 0:
            executed = np.concatenate(self.current_block, axis=1) if self.current_block else None  # (B, block*A)
            self.world.observe(pixels, states, executed)
            self.current_block = []
            started = time.perf_counter()
            first_block = self.propose()[:, 0].cpu().numpy()  # (B, block*A)
            if self.hold_radius:
                self.latch_reached(self.world.frame_tokens, states)
            self.plans.append(PlanRecord(self.step, time.perf_counter() - started, [None] * self.batch))
            self.queue = first_block.reshape(self.batch, self.block, self.action_dim).astype(np.float32)
        elif self.hold_radius and not self.hold.holding.all():
            self.latch_reached(self.world.encode(pixels), states)
        action = self.queue[:, 0]  # (B, A)
        self.queue = self.queue[:, 1:]
        if self.hold_radius and self.hold.holding.any():
            action = np.where(self.hold.holding[:, None], self.hold.actions(states), action)  # (B, A)
        self.current_block.append(action)
        self.step += 1
        return action

    def cube_positions(self, frame_tokens: torch.Tensor, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> the cube's x, y, z (B, 3) as the position readout reads the frame, or the pinch's where the gripper
        holds the cube and the readout reads it within `carried_radius` of the pinch (module docstring), and which
        rows those are (B,) bool."""
        positions = self.propose.read_positions(frame_tokens)  # (B, 3)
        carried = np.zeros(len(positions), dtype=bool)
        if self.carried_radius:
            pinch = self.hold.effector_positions(states)  # (B, 3)
            carried = self.hold.grasping(states) & (np.linalg.norm(positions - pinch, axis=-1) < self.carried_radius)
            positions = np.where(carried[:, None], pinch, positions)
        return positions, carried

    def latch_reached(self, frame_tokens: torch.Tensor, states: np.ndarray) -> None:
        """Latch the hold of every row whose cube lies within `hold_radius` of the goal image's; with
        `place_carried`, a carried cube's pinch is held where the goal image's cube is read."""
        positions, carried = self.cube_positions(frame_tokens, states)
        distance = self.propose.goal_distance(positions)  # (B,)
        offsets = np.where(carried[:, None], self.propose.to_goal(positions), 0.0) if self.place_carried else None
        self.hold.latch(distance < self.hold_radius, states, offsets)
