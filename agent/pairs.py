"""Where an evaluation's start/goal pairs come from (`evaluate.goals`, docs/protocol.md).

    pairs, excluded = draw_pairs(cfg, store, task, seed)   # one eval seed's pairs: dicts of start_state (S,),
                                                           # goal_state (S,), goal_image (H, W, 3), ...

`held_out` (the default): start = (episode, t) of the held-out `eval` split, goal = the stored frame and
state `goal_offset` steps later (the protocol LeWM, DINO-WM and PLDM report on). `ogbench_tasks`: OGBench's
own five evaluation goals (the cube's protocol 2). A pair's draws depend only on the eval seed and its index.
"""
from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from envs.dataset import EpisodeStore

GOAL_SOURCES = ("held_out", "ogbench_tasks")


def sample_pairs(store: EpisodeStore, task, count: int, goal_offset: int, seed: int,
                 exclude_within: float = 0.0) -> tuple[list[dict], int]:
    """`count` start/goal pairs from `store`, reproducible under `seed`; returns (pairs, excluded)."""
    length = store.episode_length
    if count < 1:
        raise ValueError(f"evaluate.pairs={count} is invalid; expected a positive int")
    if goal_offset > length:
        raise ValueError(f"evaluate.goal_offset={goal_offset} is invalid; expected <= the episode length {length}")
    candidates = [(e, t) for e in range(len(store)) for t in range(length - goal_offset + 1)]
    order = np.random.default_rng(seed).permutation(len(candidates))
    pairs, excluded, episodes = [], 0, {}
    for index in order:
        episode_index, start = candidates[index]
        if episode_index not in episodes:
            episodes[episode_index] = store.episode(episode_index)
        episode = episodes[episode_index]
        states = np.concatenate([episode["qpos"], episode["qvel"]], axis=1)  # (T+1, S)
        start_state, goal_state = states[start], states[start + goal_offset]
        if task.distance(start_state, goal_state) < exclude_within:
            excluded += 1
            continue
        pairs.append({"episode": int(episode_index), "start_step": int(start), "start_state": start_state,
                      "goal_state": goal_state, "goal_image": episode["frames"][start + goal_offset]})
        if len(pairs) == count:
            return pairs, excluded
    raise ValueError(f"evaluate.pairs={count} is more than the eval split offers ({len(pairs)} usable pairs)")


def ogbench_task_pairs(task, count: int, seed: int) -> list[dict]:
    """`count` pairs of OGBench's own evaluation goals (the cube's protocol 2), its task_id 1-5 in turn (pair i
    is task i % 5 + 1), each drawn by OGBench's task-mode reset under a seed of (seed, i); the goal image is
    the goal state in this task's frames."""
    if not hasattr(task, "ogbench_task"):
        raise ValueError(f"evaluate.goals=ogbench_tasks needs an OGBench task (cube); {type(task).__name__} has none")
    if count < 1:
        raise ValueError(f"evaluate.pairs={count} is invalid; expected a positive int")
    pairs = []
    for index in range(count):
        task_id = index % task.ogbench_task_count + 1
        start_state, goal_state = task.ogbench_task(task_id, seed * 100_003 + index)
        pairs.append({"task_id": task_id, "episode": None, "start_step": None, "start_state": start_state,
                      "goal_state": goal_state, "goal_image": task.render_goal(goal_state)})
    return pairs


def draw_pairs(cfg: DictConfig, store: EpisodeStore, task, seed: int) -> tuple[list[dict], int]:
    """The start/goal pairs of one eval seed, from `evaluate.goals`; returns (pairs, pairs excluded)."""
    if cfg.evaluate.goals == "ogbench_tasks":
        return ogbench_task_pairs(task, cfg.evaluate.pairs, seed), 0
    return sample_pairs(store, task, cfg.evaluate.pairs, cfg.evaluate.goal_offset, seed, cfg.evaluate.exclude_within)
