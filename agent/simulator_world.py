"""The oracle's world: the true simulator from the current state, scored by the true distance to the goal state.

The same interface as `agent.worlds.LatentWorld` (agent/worlds.py): the planner cannot tell them apart, so the
oracle is the ceiling of the same CEM, MPC settings and budget.
"""
from __future__ import annotations

import numpy as np
import torch

from agent.worlds import aggregate_over_blocks


class SimulatorWorld:
    """The oracle: the true simulator from the current state, scored by the true state distance."""

    needs_goal_states = True

    def __init__(self, task, block: int, aggregate: str = "last", hold_radius: float = 0.0):
        """`hold_radius` > 0: an env whose state lies within it of the goal (the task's distance) is holding: its
        plans are scored by the mean distance over every control step they simulate (reach early, stay, and nothing
        moves between block ends): the ceiling of the latent world's hold energy."""
        aggregate_over_blocks(torch.zeros(1, 1), aggregate)
        if hold_radius < 0:
            raise ValueError(f"evaluate.energy.hold_radius={hold_radius} is invalid; expected >= 0")
        self.task, self.block, self.aggregate, self.hold_radius = task, block, aggregate, float(hold_radius)
        self.goal_states: np.ndarray | None = None
        self.states: np.ndarray | None = None
        self.state_dim = task.nq + task.nv  # S: (qpos, qvel)

    def check_frames(self, images) -> None:
        """The oracle reads no frames: any size."""

    def set_goal(self, goal_images=None, goal_states: np.ndarray | None = None) -> None:
        self.goal_states = np.asarray(goal_states, dtype=np.float64)  # (B, S)

    def observe(self, pixels, states: np.ndarray, executed_block=None) -> None:
        self.states = np.asarray(states, dtype=np.float64)  # (B, S)

    def energy_fn(self, blocks: int | None = None):
        states, goals = self.states, self.goal_states
        action_dim = self.task.action_space.shape[0]
        substeps = self.block * self.task.action_repeat  # control steps per block

        def energy(actions: torch.Tensor) -> torch.Tensor:
            actions = actions[:, :, :blocks]  # (B, K, H', block*A)
            batch, samples, horizon, _ = actions.shape
            step_actions = actions.detach().cpu().double().numpy()
            step_actions = step_actions.reshape(batch * samples, horizon * self.block, action_dim)  # (B*K, T, A)
            initial = np.repeat(states, samples, axis=0)  # (B*K, S)
            trajectory = self.task.simulate(initial, step_actions)  # (B*K, H*block*repeat, S)
            trajectory = trajectory.reshape(batch, samples, horizon * substeps, -1)
            distances = np.stack([self.task.distances(trajectory[b], goals[b]) for b in range(batch)])  # (B, K, T)
            distances = torch.from_numpy(distances).float()
            energies = aggregate_over_blocks(distances[..., substeps - 1 :: substeps], self.aggregate)  # block ends
            if not self.hold_radius:
                return energies
            holding = torch.tensor([self.task.distance(state, goal) <= self.hold_radius
                                    for state, goal in zip(states, goals)])  # (B,)
            return torch.where(holding[:, None], distances.mean(-1), energies)

        return energy
