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


def run_in_process(argv: list[str], function) -> subprocess.CompletedProcess:
    """Run a command's `function()` in this process as if `argv` were its command line: its exit status, stdout and
    stderr, as `subprocess.run` gives them, without the 3-8 s a subprocess spends importing torch, transformers,
    MuJoCo and Hydra. Hydra's logging set-up is skipped (it closes every handler, pytest's capture among them); what the
    command changes in this process (argv, the SIGINT handler, Hydra's global state, the working directory) is
    put back."""
    import contextlib
    import io
    import signal
    from unittest import mock

    import hydra._internal.logging_config
    from hydra.core.global_hydra import GlobalHydra

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, interrupt_handler, cwd = sys.argv[:], signal.getsignal(signal.SIGINT), os.getcwd()
    returncode = 0
    try:
        os.chdir(REPO)
        sys.argv[:] = argv
        with (contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr),
              mock.patch.object(hydra._internal.logging_config, "configure_logging")):
            try:
                function()
            except SystemExit as exit:
                returncode = exit.code if isinstance(exit.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
        signal.signal(signal.SIGINT, interrupt_handler)
        sys.argv[:] = saved_argv
        os.chdir(cwd)
    return subprocess.CompletedProcess(argv, returncode, stdout.getvalue(), stderr.getvalue())


def cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """`jepa-agent ARGS` through `agent.cli.main` in this process (`run_in_process`). Commands that are killed or
    interrupted, and those that must start in a fresh process (the entry point itself, reproducibility across
    processes), run in a subprocess (`cli`)."""
    from agent.cli import main

    return run_in_process(["jepa-agent", *args], lambda: main(list(args)))


def module_in_process(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` for a benchmark script, in this process: its `main` under `run_main`, as its
    `__main__` block calls it."""
    import importlib

    from benchmarks.arguments import run_main

    return run_in_process([module, *args], lambda: run_main(importlib.import_module(module).main))


@pytest.fixture(scope="session")
def micro_run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("micro") / "run"
    result = cli_in_process("run", "experiment=micro", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
