"""`jepa-agent collect`: offline episodes from a behaviour policy into `paths.dataset/{train,val,eval}`.

    jepa-agent collect env=reacher collect.episodes=200 hydra.run.dir=runs/reacher
    jepa-agent collect env=point_mass collect.policy.persistence=0.97 hydra.run.dir=runs/pm

Every episode's reset seed and policy noise derive from (seed, split, episode index), so a rerun with the same
config resumes after the last committed episode and reproduces the same data; raising `collect.episodes`
appends. With `collect.workers` > 1, worker processes (one task each) roll the episodes and the writer commits
them in index order, so the dataset is the same as one process writes. A split collected with other settings
(`split_meta`), or holding more episodes than asked for, is refused, naming them, unless `run.overwrite=true`,
which deletes it and collects afresh. The evaluation split uses its own seed stream, so its episodes never
coincide with training ones, and may use its own behaviour policy (`collect.eval_policy`): the evaluation
protocol's goals are then as far from their starts as that policy moves in 25 steps.
"""
from __future__ import annotations

import multiprocessing
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from envs.base import check_image_size
from bookkeeping.checks import angular_position_mask, check_ints
from envs.dataset import EpisodeStore, ShardWriter, read_manifest
from bookkeeping.io import atomic_write_text, ensure_writable_dir, may_resume
from envs.policies import check_policy, make_policy
from envs.registry import make_from_config, task_class
from envs.video import upscale, write_mp4

SPLIT_STREAMS = {"train": 0, "val": 1, "eval": 2}


def episode_seeds(seed: int, split: str, index: int) -> tuple[int, int]:
    """(env reset seed, policy seed) of one episode, independent of how many were collected."""
    reset_seed, policy_seed = np.random.SeedSequence([seed, SPLIT_STREAMS[split], index]).generate_state(2)
    return int(reset_seed), int(policy_seed)


def collect_episode(task, policy_cfg, length: int, reset_seed: int, policy_seed: int) -> dict[str, np.ndarray]:
    """Roll the behaviour policy for `length` steps: frames (T+1, H, W, 3), actions (T, A), ..."""
    policy = make_policy(policy_cfg, task.action_space.shape[0], np.random.default_rng(policy_seed), task)
    observation, info = task.reset(seed=reset_seed)
    policy.reset()  # after the task's: a scripted policy reads the scene
    frames, proprio, states, actions = [observation["pixels"]], [observation["proprio"]], [info["state"]], []
    for _ in range(length):
        action = policy()
        observation, _, _, _, info = task.step(action)
        actions.append(action)
        frames.append(observation["pixels"])
        proprio.append(observation["proprio"])
        states.append(info["state"])
    states = np.stack(states)  # (T+1, nq + nv)
    return {
        "frames": np.stack(frames),
        "actions": np.stack(actions).astype(np.float32),
        "proprio": np.stack(proprio).astype(np.float32),
        "qpos": states[:, : task.nq],
        "qvel": states[:, task.nq :],
        "seed": np.int64(reset_seed),
    }


def validate(cfg: DictConfig) -> None:
    collect = cfg.collect
    task_class(cfg.env.name)  # unknown task -> error listing the registered ones
    check_image_size(cfg.env.image_size)
    check_ints(collect, "collect", ("episodes", "eval_episodes", "episode_length", "episodes_per_shard", "workers"))
    if not 0.0 <= collect.val_fraction < 1.0:
        raise ValueError(f"collect.val_fraction={collect.val_fraction!r} is invalid; expected a float in [0, 1)")
    for split in ("train", "eval"):  # bad kinds or keys fail before anything is written
        check_policy(split_policy(collect, split), task_class(cfg.env.name))


def split_sizes(collect: DictConfig) -> dict[str, int]:
    val = int(round(collect.episodes * collect.val_fraction))
    return {"train": collect.episodes - val, "val": val, "eval": collect.eval_episodes}


def split_policy(collect: DictConfig, split: str) -> DictConfig:
    """The behaviour policy of a split: `eval_policy` for the eval split when set, else `policy`."""
    if split == "eval" and collect.get("eval_policy") is not None:
        return collect.eval_policy
    return collect.policy


def split_meta(cfg: DictConfig, task, split: str) -> dict:
    """What a split's episodes depend on; a rerun with other values is refused."""
    return {
        "task": cfg.env.name,
        "split": split,
        "seed": int(cfg.seed),
        "episode_length": int(cfg.collect.episode_length),
        "image_size": task.image_size,
        "action_dim": int(task.action_space.shape[0]),
        "proprio_dim": int(task.observation_space["proprio"].shape[0]),
        "nq": task.nq,
        "nv": task.nv,
        "action_repeat": task.action_repeat,
        "angular_positions": list(angular_position_mask(task.angular_positions, task.nq)),  # hinge joints, per qpos
        "env": OmegaConf.to_container(cfg.env, resolve=True),
        "policy": OmegaConf.to_container(split_policy(cfg.collect, split), resolve=True),
    }


def open_writer(split_dir: Path, meta: dict, requested: int, overwrite: bool) -> ShardWriter:
    """The split's writer, resuming a split of the same `meta` and at most `requested` episodes; one of
    other settings or more episodes is refused, or deleted with `overwrite`."""
    manifest = read_manifest(split_dir)
    if manifest is not None:
        keep = may_resume("dataset split", split_dir, manifest["meta"], meta, overwrite)
        committed = sum(shard["episodes"] for shard in manifest["shards"])
        if keep and committed > requested:
            if not overwrite:
                raise ValueError(f"dataset split {str(split_dir)!r} holds {committed} episodes, more than the "
                                 f"{requested} asked for; ask for at least {committed}, or pass run.overwrite=true "
                                 "to collect it afresh")
            keep = False
        if not keep:
            shutil.rmtree(split_dir)
    return ShardWriter(split_dir, meta)


def main(cfg: DictConfig) -> None:
    validate(cfg)
    dataset_dir = ensure_writable_dir(cfg.paths.dataset, "dataset directory")
    task = make_from_config(cfg.env)
    sizes = {split: count for split, count in split_sizes(cfg.collect).items() if count > 0}
    writers = {split: open_writer(dataset_dir / split, split_meta(cfg, task, split), sizes[split],
                                  bool(cfg.run.overwrite)) for split in sizes}
    atomic_write_text(dataset_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    jobs = [(split, index) for split, writer in writers.items() for index in range(writer.num_committed, sizes[split])]
    frames_per_episode = cfg.collect.episode_length + 1
    progress = tqdm(total=len(jobs), unit="episode", desc=f"collect {cfg.env.name}", dynamic_ncols=True,
                    disable=not jobs)  # nothing to collect: no empty bar
    started = time.perf_counter()
    last_flush = {split: started for split in writers}
    episodes = rolled_episodes(task, cfg, jobs)
    try:
        for (split, index), episode in zip(jobs, episodes):
            writer = writers[split]
            writer.add(episode)
            progress.update(1)
            rate = progress.n * frames_per_episode / (time.perf_counter() - started)
            progress.set_postfix(split=split, frames_per_s=f"{rate:.0f}")
            full = len(writer.buffer) >= cfg.collect.episodes_per_shard
            if full or time.perf_counter() - last_flush[split] >= cfg.collect.flush_seconds:
                writer.flush()
                last_flush[split] = time.perf_counter()
            if index == sizes[split] - 1:  # the split's last episode: commit before the next split's
                writer.flush()
        for writer in writers.values():
            writer.flush()
    finally:
        episodes.close()  # stops the worker processes, on an error or Ctrl-C too
        progress.close()
        task.close()
    done_before = "" if jobs else ", all collected before"
    print(f"dataset: {dataset_dir} ({', '.join(f'{split} {count}' for split, count in sizes.items())} episodes"
          f"{done_before})")
    if cfg.collect.preview_episodes > 0:
        write_preview(dataset_dir, cfg.collect.preview_episodes)


def rolled_episodes(task, cfg: DictConfig, jobs: list[tuple[str, int]]) -> Iterator[dict[str, np.ndarray]]:
    """The episodes of `jobs` ((split, index) pairs), in their order: rolled in this process on `task`, or by
    `collect.workers` processes (spawned, each with its own task; episodes depend on (seed, split, index) only)."""
    if cfg.collect.workers == 1 or len(jobs) < 2:
        for job in jobs:
            yield roll_episode(task, cfg, job)
        return
    settings = OmegaConf.to_container(cfg, resolve=True)
    with multiprocessing.get_context("spawn").Pool(min(cfg.collect.workers, len(jobs)), initializer=start_worker,
                                                   initargs=(settings,)) as pool:
        yield from pool.imap(worker_episode, jobs)  # leaving the block (done, error, Ctrl-C) terminates the workers


def roll_episode(task, cfg: DictConfig, job: tuple[str, int]) -> dict[str, np.ndarray]:
    split, index = job
    return collect_episode(task, split_policy(cfg.collect, split), cfg.collect.episode_length,
                           *episode_seeds(cfg.seed, split, index))


WORKER: dict = {}  # a worker process's config and task


def start_worker(settings: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    WORKER["cfg"] = cfg = OmegaConf.create(settings)
    WORKER["task"] = make_from_config(cfg.env)


def worker_episode(job: tuple[str, int]) -> dict[str, np.ndarray]:
    return roll_episode(WORKER["task"], WORKER["cfg"], job)


def write_preview(dataset_dir: Path, episodes: int) -> Path:
    """`preview.mp4`: the first training episodes back to back, upscaled to >= 256 px."""
    store = EpisodeStore(dataset_dir / "train")
    frames = np.concatenate([store.episode(i)["frames"] for i in range(min(episodes, len(store)))])
    factor = max(1, 256 // frames.shape[1])
    path = write_mp4(dataset_dir / "preview.mp4", upscale(frames, factor), fps=25)
    print(f"preview video: {path}")
    return path
