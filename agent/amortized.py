"""The amortized agent: the goal-conditioned policy (world_model.goal_policy) acts without planning.

    propose = PolicyProposer(policy, position_readout, latent_readout, world)   # readouts: None where not read
    agent = AmortizedAgent(world, propose, block, action_dim)
    agent.reset(goal_images (B, H, W, 3), None, seeds (B,)); actions = agent.act(pixels, states)   # (B, A)

At every block boundary the world (a `LatentWorld`: the frozen encoder) embeds the frame, the policy
maps it and the goal image to an action chunk, and the agent executes the chunk's first block (one MLP
call per block instead of CEM's samples x iterations predictor rollouts). Each call is recorded as a
plan (its latency; no energy), so that the evaluation reports it as it reports a planner's.

`PolicyProposer` is also CEM's warm start (`evaluate.agent=amortized_cem`): `MPCAgent(warm_start=...)`
starts every plan from the policy's chunk instead of the shifted last plan.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from agent.mpc import PlanRecord, check_batch, check_observation
from agent.worlds import LatentWorld
from world_model.goal_policy import GoalPolicy, frame_readouts
from world_model.latent_readout import LatentReadout
from world_model.position_readout import PositionReadout


class PolicyProposer:
    """The policy's action chunk for the world's latest observation and goal. The readouts are those the policy
    was trained on (None: not read)."""

    def __init__(self, policy: GoalPolicy, position_readout: PositionReadout | None,
                 latent_readout: LatentReadout | None, world: LatentWorld):
        self.policy, self.world = policy, world
        self.position_readout, self.latent_readout = position_readout, latent_readout
        self.goal_tokens: torch.Tensor | None = None     # the goal whose readout features are kept
        self.goal_readout: torch.Tensor | None = None    # (B, R + O)

    @torch.no_grad()
    def __call__(self, horizon: int | None = None) -> torch.Tensor:
        """-> (B, horizon, block*A) in [-1, 1]: the policy's chunk, cut to `horizon` blocks or padded by
        repeating its last block (None: the chunk as it is)."""
        world = self.world
        if self.goal_tokens is not world.goal_tokens:  # a new goal (reset): read it once
            self.goal_tokens = world.goal_tokens
            self.goal_readout = frame_readouts(self.position_readout, self.latent_readout, world.goal_tokens,
                                               world.goal_latents)
        proprio = world.context_proprio[-1] if world.context_proprio else None  # (B, P) standardised
        readout = frame_readouts(self.position_readout, self.latent_readout, world.frame_tokens,
                                 world.context_latents[-1])  # (B, R + O)
        chunk = self.policy(world.context_latents[-1], world.goal_latents, proprio, readout, self.goal_readout)
        if horizon is None:
            return chunk
        padding = chunk[:, -1:].expand(-1, max(0, horizon - chunk.shape[1]), -1)
        return torch.cat([chunk[:, :horizon], padding], dim=1)  # (B, horizon, block*A)


@dataclass
class AmortizedAgent:
    world: LatentWorld
    propose: PolicyProposer
    block: int                   # task steps per action block
    action_dim: int              # A
    plans: list[PlanRecord] = field(default_factory=list)
    batch: int | None = field(default=None, init=False)  # B, set by reset

    def reset(self, goal_images: np.ndarray, goal_states: np.ndarray | None, seeds: Sequence[int]) -> None:
        """Goal states are not read (the goal is its image); seeds neither: the policy is deterministic."""
        self.batch = check_batch(goal_images, goal_states, seeds, self.world.state_dim)
        self.world.set_goal(goal_images, goal_states)
        self.queue = np.zeros((self.batch, 0, self.action_dim), dtype=np.float32)  # (B, steps, A) to execute
        self.current_block: list[np.ndarray] = []  # actions executed since the last block boundary
        self.step = 0
        self.plans = []

    def act(self, pixels: np.ndarray, states: np.ndarray) -> np.ndarray:
        check_observation(self.batch, pixels, states, self.world.state_dim)
        self.world.check_frames(pixels)
        if self.step % self.block == 0:
            executed = np.concatenate(self.current_block, axis=1) if self.current_block else None  # (B, block*A)
            self.world.observe(pixels, states, executed)
            self.current_block = []
            started = time.perf_counter()
            first_block = self.propose()[:, 0].cpu().numpy()  # (B, block*A)
            self.plans.append(PlanRecord(self.step, time.perf_counter() - started, [None] * self.batch))
            self.queue = first_block.reshape(self.batch, self.block, self.action_dim).astype(np.float32)
        action = self.queue[:, 0]  # (B, A)
        self.queue = self.queue[:, 1:]
        self.current_block.append(action)
        self.step += 1
        return action
