"""Shared fixtures: a tiny real reacher dataset (collected once per test session)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PYTHONPATH", str(REPO))

from agent.config import compose_config  # noqa: E402,F401  (re-exported for the tests)

TINY_EPISODE_LENGTH = 20
TINY_SPLITS = {"train": 12, "val": 4, "eval": 4}


def collect_tiny_dataset(dataset_dir: Path, task_name: str = "reacher", image_size: int = 64) -> Path:
    """A small real dataset written through the production writer (no Hydra involved)."""
    from omegaconf import OmegaConf

    import envs
    from bookkeeping.checks import angular_position_mask
    from envs.collect import collect_episode, episode_seeds
    from envs.dataset import ShardWriter

    policy = OmegaConf.create({"kind": "correlated", "persistence": 0.9, "scale": 1.0})
    task = envs.make(task_name, image_size=image_size)
    try:
        for split, count in TINY_SPLITS.items():
            meta = {"task": task_name, "split": split, "seed": 0, "episode_length": TINY_EPISODE_LENGTH,
                    "image_size": image_size, "action_dim": 2, "proprio_dim": 4, "nq": 2, "nv": 2,
                    "action_repeat": task.action_repeat,
                    "angular_positions": list(angular_position_mask(task.angular_positions, task.nq))}
            writer = ShardWriter(dataset_dir / split, meta)
            for index in range(count):
                writer.add(collect_episode(task, policy, TINY_EPISODE_LENGTH, *episode_seeds(0, split, index)))
                if len(writer.buffer) == 4:
                    writer.flush()
            writer.flush()
    finally:
        task.close()
    return dataset_dir


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run faster on one thread (and the suite's subprocesses get the other core)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> Path:
    """Path holding `train/` (12), `val/` (4), `eval/` (4) reacher episodes of 20 steps at 64 px."""
    return collect_tiny_dataset(tmp_path_factory.mktemp("tiny") / "dataset")


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`jepa-agent ARGS` in a subprocess from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def micro_run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("micro") / "run"
    result = cli("run", "experiment=micro", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
