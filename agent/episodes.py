"""Goal-reaching episodes run in lockstep, a batch at a time, and the record each one leaves.

    records = run_batch(agent, tasks, pairs, budget, seeds, record)   # one dict per pair

An episode succeeds ("reached") when the task's success predicate holds after any control step: its
published record (final and closest distance, wrapped-angle success, the plans that chose its actions)
stops at its first success. Every episode runs on to the budget all the same, so that the record also
says whether the agent stayed: `held` when the goal is within the threshold at each of the last
`hold_steps` task steps of the budget, `final_distance_at_budget`, and every step's distance
(`distances_to_budget`: the start, then after each task step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from envs.base import PixelTask


@dataclass
class EpisodeTrace:
    """One episode of a batch, followed until its first success."""

    task: PixelTask
    goal_state: np.ndarray                 # (S,)
    distances: list[float]                 # after each task step, from the start
    closest: float                         # the smallest over every control step, as success is checked
    wrapped_errors: list[float | None]     # per task step: the smallest wrapped joint error (None: no joints)
    budget_distances: list[float]          # after each task step to the budget, success or not
    success_step: int | None = None
    frames: list[np.ndarray] | None = None  # (H, W, 3) per task step, for a video
    captions: list[str] | None = None

    @classmethod
    def start(cls, task: PixelTask, state: np.ndarray, goal_state: np.ndarray, pixels: np.ndarray,
              record: bool) -> EpisodeTrace:
        distance = task.distance(state, goal_state)
        return cls(task, goal_state, [distance], distance, [wrapped_error(task, state[None], goal_state)], [distance],
                   frames=[pixels.copy()] if record else None,  # a copy: the batch's pixel array is reused
                   captions=[caption(0, None, distance, False)] if record else None)

    def update(self, step: int, pixels: np.ndarray, info: dict, energy: float | None) -> None:
        """After task step `step`: `info` from `task.step`, `energy` of the plan that chose the action."""
        self.budget_distances.append(info["distance"])
        if self.success_step is None:
            substep_states = info["substep_states"]  # (R, S): one per control step
            self.distances.append(info["distance"])
            self.closest = min(self.closest, float(self.task.distances(substep_states, self.goal_state).min()))
            self.wrapped_errors.append(wrapped_error(self.task, substep_states, self.goal_state))
            if info["success_substep"]:
                self.success_step = step
        if self.frames is not None:
            self.frames.append(pixels)
            self.captions.append(caption(step, energy, info["distance"], self.success_step is not None))


def run_batch(agent, tasks: list, pairs: list[dict], budget: int, seeds: list[int], record: list[bool],
              hold_steps: int = 5) -> list[dict]:
    """Run len(pairs) episodes in lockstep (one planner call for all) to the budget; returns per-episode records.

    seeds: one per episode, so an episode's random draws do not depend on which batch it ran in.
    record: per episode, whether to keep its frames and captions (for a video).
    hold_steps: `held` asks the goal to be within the threshold at each of the budget's last hold_steps steps."""
    goal_states = np.stack([pair["goal_state"] for pair in pairs])  # (B, S)
    goal_images = np.stack([pair["goal_image"] for pair in pairs])  # (B, H, W, 3)
    for task, pair, seed in zip(tasks, pairs, seeds):
        task.reset(seed=seed)
        task.set_state(pair["start_state"])
        task.set_goal(pair["goal_state"])
    pixels = np.stack([task.render() for task in tasks])  # (B, H, W, 3)
    states = np.stack([task.get_state() for task in tasks])  # (B, S)
    traces = [EpisodeTrace.start(task, state, goal, image, keep)
              for task, state, goal, image, keep in zip(tasks, states, goal_states, pixels, record)]
    agent.reset(goal_images, goal_states, seeds)
    for step in range(1, budget + 1):
        actions = agent.act(pixels, states)  # (B, A)
        for b, (task, trace) in enumerate(zip(tasks, traces)):
            observation, _, _, _, info = task.step(actions[b])
            pixels[b], states[b] = observation["pixels"], info["state"]
            energy = agent.plans[-1].energies[b] if agent.plans else None
            trace.update(step, observation["pixels"], info, energy)
    records = []
    for b, (pair, trace) in enumerate(zip(pairs, traces)):
        end = budget if trace.success_step is None else trace.success_step
        plans = [plan for plan in agent.plans if plan.step < end]  # the plans that chose this episode's actions
        records.append({
            "episode": pair["episode"], "start_step": pair["start_step"],
            **({"task_id": pair["task_id"]} if "task_id" in pair else {}),  # OGBench's evaluation goals
            "success": trace.success_step is not None,
            "steps_to_success": trace.success_step, "initial_distance": float(trace.distances[0]),
            "final_distance": float(trace.distances[-1]), "min_distance": trace.closest,
            **wrapped_success(trace.task, trace.wrapped_errors),
            "held": bool(max(trace.budget_distances[-hold_steps:]) < trace.task.success_threshold),
            "final_distance_at_budget": float(trace.budget_distances[-1]),
            "distances_to_budget": [float(distance) for distance in trace.budget_distances],  # start, then each step
            "plan_latencies_s": [plan.latency_s for plan in plans],
            "energies": [plan.energies[b] for plan in plans],
            "frames": trace.frames, "captions": trace.captions, "goal_image": pair["goal_image"],
        })
    return records


def wrapped_error(task, substep_states: np.ndarray, goal_state: np.ndarray) -> float | None:
    """substep_states (R, S) -> the smallest over them of the largest wrapped joint-angle error, for
    tasks with joints (reacher); None otherwise."""
    if not hasattr(task, "joint_errors"):
        return None
    return float(task.joint_errors(substep_states, goal_state)["wrapped"].max(axis=-1).min())


def wrapped_success(task, errors: list) -> dict:
    """Success under the wrapped angle error, checked after every control step as success is."""
    if errors[0] is None:
        return {}
    return {"success_wrapped": bool(min(errors) < task.success_threshold), "min_wrapped_error": float(min(errors))}


def caption(step: int, energy: float | None, distance: float, success: bool) -> str:
    energy_text = "-" if energy is None else f"{energy:.3f}"
    return f"step {step:3d}  energy {energy_text}  distance {distance:.3f}  success {'yes' if success else 'no'}"
