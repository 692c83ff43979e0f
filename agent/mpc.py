"""The MPC agent: plan H action blocks with a world model, execute k of them, observe, replan.

    agent.reset(goal_images (B, H, W, 3), goal_states (B, S) | None, seeds (B,))
    actions = agent.act(pixels (B, H, W, 3), states (B, S))       # (B, A), once per task step

What each agent reads: the latent agent the goal images, the frames and, when its predictor reads the
proprio, the states (goal states are not needed: pass None); the oracle the goal states and the states
(no frames); the random agent nothing but the batch size.

B envs are planned at once (one planner call, one energy call per iteration for all of them).
The world observes a frame at every block boundary, also between replans, so the predictor's
context is always the latest `context_frames` frames and the blocks executed between them.

`shrink_horizon`: the plans of one H-block window all end at its end. Replanning every k < H blocks,
the plan made j blocks into the window is scored over its first H - j blocks only, up to a fixed
deadline (by the world's aggregate: `last` scores the deadline block, `min` the best block before it),
so the final approach uses the predictor's short, most accurate predictions; a new window starts at
the deadline (with H not a multiple of k, the last plan of a window executes only the blocks left
to it). Without it every plan is scored over all H blocks, which with k < H and `last` is
docs/protocol.md's sliding-deadline trap.

`warm_start` (amortized + CEM): a callable giving each plan's initial mean (B, H, block*A), the goal
policy's chunk for the latest observation (agent/amortized.py), instead of the shifted last plan.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from agent.worlds import World
from planners import Planner, shift_plan


@dataclass
class PlanRecord:
    step: int                 # task step at which the plan was made
    latency_s: float          # wall time of the planner call
    energies: list[float | None]  # (B,) energy of the chosen plan per env (None: a policy's, not scored)


class Agent(Protocol):
    """What the evaluation drives: `MPCAgent` (latent, pixel or oracle world), `RandomAgent`, `ExpertAgent`,
    `AmortizedAgent` (agent/amortized.py), and any of the latent ones wrapped in a `JointHold` (agent/joint_hold.py)."""

    plans: list[PlanRecord]

    def reset(self, goal_images: np.ndarray, goal_states: np.ndarray | None, seeds: Sequence[int]) -> None: ...

    def act(self, pixels: np.ndarray, states: np.ndarray) -> np.ndarray: ...


@dataclass
class MPCAgent:
    world: World              # LatentWorld (agent/worlds.py) | SimulatorWorld (agent/simulator_world.py)
    planner: Planner
    block: int                # task steps per action block
    action_dim: int           # A
    execute_blocks: int       # blocks executed before replanning
    shrink_horizon: bool = False  # score each plan only up to the end of its H-block window (see above)
    warm_start: Callable[[int], torch.Tensor] | None = None  # horizon -> (B, H, block*A): each plan's initial
                              # mean (agent.amortized.PolicyProposer) instead of the shifted last plan
    warm_start_std: float | None = None  # the first iteration's std around that warm start (None: planner's)
    plans: list[PlanRecord] = field(default_factory=list)
    batch: int | None = field(default=None, init=False)  # B, set by reset

    def reset(self, goal_images: np.ndarray, goal_states: np.ndarray | None, seeds: Sequence[int]) -> None:
        """One seed per env: env b's planner noise depends on seeds[b] and the planner's own seed only,
        not on the batch (planner.seed 0 leaves each episode's seed as it is). `goal_states` may be None
        for a world that does not read them (the latent one)."""
        if goal_states is None and getattr(self.world, "needs_goal_states", False):
            raise ValueError("reset got goal_states=None; the oracle plans towards goal states (B, S): pass them")
        self.batch = check_batch(goal_images, goal_states, seeds, self.state_dim)
        self.world.set_goal(goal_images, goal_states)
        self.generators = [self.planner.make_generators(1, self.planner.seed * 1_000_003 + int(seed))[0]
                           for seed in seeds]
        self.plan: torch.Tensor | None = None          # (B, H, block*A) last plan
        self.executed_blocks = 0                       # blocks of it executed (at most execute_blocks)
        self.queue = np.zeros((self.batch, 0, self.action_dim), dtype=np.float32)  # actions to execute
        self.current_block: list[np.ndarray] = []     # actions executed since the last block boundary
        self.step = 0
        self.plans = []

    @property
    def state_dim(self) -> int | None:
        return getattr(self.world, "state_dim", None)  # a world that does not say reads any S

    def act(self, pixels: np.ndarray, states: np.ndarray) -> np.ndarray:
        check_observation(self.batch, pixels, states, self.state_dim)
        self.world.check_frames(pixels)
        if self.step % self.block == 0:
            executed = np.concatenate(self.current_block, axis=1) if self.current_block else None  # (B, block*A)
            self.world.observe(pixels, states, executed)
            self.current_block = []
            if self.queue.shape[1] == 0:
                self._replan()
        action = self.queue[:, 0]  # (B, A)
        self.queue = self.queue[:, 1:]
        self.current_block.append(action)
        self.step += 1
        return action

    def _replan(self) -> None:
        if self.warm_start is not None:
            warm_start = self.warm_start(self.planner.horizon)
        else:
            warm_start = None if self.plan is None else shift_plan(self.plan, self.executed_blocks)
        blocks = None  # all H
        if self.shrink_horizon:
            blocks = self.planner.horizon - (self.step // self.block) % self.planner.horizon  # to the deadline
        started = time.perf_counter()
        result = self.planner.plan(self.world.energy_fn(blocks), warm_start, self.generators, batch_size=self.batch,
                                   init_std=self.warm_start_std if self.warm_start is not None else None)
        latency = time.perf_counter() - started
        self.plan = result.actions  # (B, H, block*A)
        self.executed_blocks = min(self.execute_blocks, blocks or self.planner.horizon)  # only blocks it was scored on
        executed = result.actions[:, : self.executed_blocks].cpu().numpy()  # (B, k, block*A)
        self.queue = executed.reshape(self.batch, -1, self.action_dim).astype(np.float32)  # (B, k*block, A)
        self.plans.append(PlanRecord(self.step, latency, result.energy.cpu().tolist()))


class RandomAgent:
    """The floor: uniformly random actions, independent of observations and goal."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim
        self.plans: list[PlanRecord] = []
        self.batch: int | None = None  # B, set by reset

    def reset(self, goal_images: np.ndarray, goal_states: np.ndarray | None, seeds: Sequence[int]) -> None:
        self.batch = check_batch(goal_images, goal_states, seeds)
        self.generators = [np.random.default_rng(int(seed)) for seed in seeds]

    def act(self, pixels: np.ndarray, states: np.ndarray) -> np.ndarray:
        check_observation(self.batch, pixels, states)
        return np.stack([rng.uniform(-1.0, 1.0, self.action_dim) for rng in self.generators]).astype(np.float32)


class ExpertAgent:
    """A privileged ceiling for tasks that have a scripted expert (the cube: OGBench's pick-and-place oracle),
    where the simulator oracle's planning is too slow: the expert reads the true state and the goal state's
    object pose, which no other agent sees. `task` is an instance of the task of its own (the expert writes
    states into it)."""

    def __init__(self, task):
        if not hasattr(task, "goal_expert"):
            raise ValueError(f"evaluate.agent=expert needs a task with a scripted expert (cube); "
                             f"{type(task).__name__} has none")
        self.task, self.state_dim = task, task.nq + task.nv
        self.plans: list[PlanRecord] = []
        self.batch: int | None = None  # B, set by reset

    def reset(self, goal_images: np.ndarray, goal_states: np.ndarray | None, seeds: Sequence[int]) -> None:
        if goal_states is None:
            raise ValueError("reset got goal_states=None; the expert drives towards goal states (B, S): pass them")
        self.batch = check_batch(goal_images, goal_states, seeds, self.state_dim)
        self.experts = [self.task.goal_expert(goal_state, np.random.default_rng(int(seed)))
                        for goal_state, seed in zip(goal_states, seeds)]

    def act(self, pixels: np.ndarray, states: np.ndarray) -> np.ndarray:
        check_observation(self.batch, pixels, states, self.state_dim)
        return np.stack([expert.act(state) for expert, state in zip(self.experts, states)])  # (B, A)


def check_batch(goal_images: np.ndarray, goal_states: np.ndarray | None, seeds: Sequence[int],
                state_dim: int | None = None) -> int:
    """The batch size B of `reset`'s arguments, which must agree (goal_states may be None)."""
    sizes = {"goal_images": len(goal_images), "seeds": len(seeds)}
    if goal_states is not None:
        sizes["goal_states"] = len(goal_states)
    if len(set(sizes.values())) != 1:
        raise ValueError(f"reset got batches of different sizes {sizes}; expected one entry per env in each")
    check_arrays("reset", goal_images, np.zeros((len(seeds), state_dim or 0)) if goal_states is None else goal_states,
                 state_dim)
    return sizes["seeds"]


def check_observation(batch: int | None, pixels: np.ndarray, states: np.ndarray, state_dim: int | None = None) -> None:
    if batch is None:
        raise RuntimeError("act() called before reset(goal_images, goal_states, seeds)")
    if len(pixels) != batch or len(states) != batch:
        raise ValueError(f"act got pixels for {len(pixels)} envs and states for {len(states)}; expected {batch}, "
                         "as given to reset (pixels (B, H, W, 3), states (B, S))")
    check_arrays("act", pixels, states, state_dim)


def check_arrays(method: str, images: np.ndarray, states: np.ndarray, state_dim: int | None) -> None:
    """images uint8 (B, H, W, 3); states finite (B, S), S = state_dim when the world reads states."""
    images, states = np.asarray(images), np.asarray(states)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{method} got images {images.dtype} {images.shape}; expected uint8 (B, H, W, 3)")
    expected = "S" if state_dim is None else str(state_dim)
    if states.ndim != 2 or (state_dim is not None and states.shape[1] != state_dim):
        raise ValueError(f"{method} got states of shape {states.shape}; expected (B, {expected}): qpos then qvel")
    if not np.isfinite(states).all():
        raise ValueError(f"{method} got states that are not finite (NaN or inf)")
