"""`jepa-agent collect` end to end: bad input (in this process, through the CLI's `main`), kill -9 and resume (in
subprocesses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from omegaconf import OmegaConf

import envs
from envs.collect import collect_episode, episode_seeds
from envs.dataset import EpisodeStore
from tests.conftest import REPO, cli, cli_in_process

SMALL = ["collect.episode_length=10", "collect.eval_episodes=1", "collect.preview_episodes=0"]


def test_help_lists_subcommands():
    from agent.stages import SUBCOMMANDS

    result = cli("--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("subcommands:")[1].split("examples:")[0].splitlines()
              if line.strip()]
    assert listed == list(SUBCOMMANDS) and {"tasks", "collect", "imagine", "run"} <= set(listed)


def test_tasks_lists_registered_tasks():
    outputs = REPO / "outputs"
    before = sorted(outputs.rglob("*")) if outputs.exists() else []
    result = cli("tasks")
    assert result.returncode == 0, result.stderr
    assert "reacher" in result.stdout and "point_mass" in result.stdout
    assert (sorted(outputs.rglob("*")) if outputs.exists() else []) == before  # no run directory in the cwd


@pytest.mark.parametrize(
    "override, message",
    [
        ("env.name=cheetah", "unknown task 'cheetah'; registered tasks: reacher, point_mass, cube"),
        ("collect.episodes=0", "collect.episodes=0 is invalid; expected a positive int"),
        ("collect.episodes=-3", "collect.episodes=-3 is invalid; expected a positive int"),
        ("collect.workers=0", "collect.workers=0 is invalid; expected a positive int"),
        ("env.image_size=8", "image_size=8 is invalid; expected an int >= 16"),
        ("env.image_size=big", "image_size='big' is invalid; expected an int >= 16"),
        ("collect.policy.kind=brownian",
         "collect.policy.kind='brownian' is invalid; expected one of 'uniform', 'correlated', 'scripted'"),
        ("+collect.policy.speed=2", "collect.policy has unknown keys ['speed']; expected kind, persistence, scale"),
        ("+collect.episdoes=3", "+collect.episdoes=3 adds a key no stage reads; "
                                "did you mean collect.episodes? (set existing keys without +)"),
        ("+planner.gripper_hold=2", "+planner.gripper_hold=2 adds a key no stage reads; expected one of planner's "
                                    "keys: name, horizon, samples, iterations, top_k, init_std, min_std, low, high, "
                                    "seed, warm_start_std"),
        ("+mpc.replan=2", "+mpc.replan=2 adds a key no stage reads; expected one of mpc's keys: execute_blocks, "
                          "shrink_horizon"),
        # Hydra's own errors, made one line by the CLI's composition check
        ("env=cheetah", "env=cheetah is invalid; expected one of: cube, point_mass, reacher"),
        ("env.name=point_mass", "task 'point_mass' takes no setting 'angle_error': pass env=point_mass (its own "
                                "env config), not env.name=point_mass"),
        ("collect.speed=2", "Could not override 'collect.speed'; Key 'speed' is not in struct; "
                            "To append to your config use +collect.speed=2"),
        ("planner.execute_blocks=2", "planner.execute_blocks=2: planner.execute_blocks is now mpc.execute_blocks; "
                                     "set mpc.execute_blocks=2"),
        ("collect.episodes=[1", "collect.episodes=[1: no viable alternative at input '[1'"),
        ("--config-name=config", "--config-name is not supported: every command composes configs/config.yaml from "
                                 "a preset and overrides; to make a run again, use the command in its command.txt"),
        ("env.name=${missing}", "env.name: Interpolation key 'missing' not found"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, override, message):
    result = cli_in_process("collect", override, *SMALL, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in result.stderr


def test_a_command_run_in_process_leaves_the_process_as_it_was(tmp_path):
    """`cli_in_process` (most of the suite's commands) puts back what a command changes: a refusal inside the stage
    has been through Hydra's job and the CLI's SIGINT handler."""
    import logging

    from agent.config import command_line

    handler, cwd, log_handlers = signal.getsignal(signal.SIGINT), os.getcwd(), logging.getLogger().handlers[:]
    result = cli_in_process("collect", "collect.episodes=0", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2 and "collect.episodes=0 is invalid" in result.stderr
    assert command_line() is None  # no Hydra job left behind: a later run writes no stale command.txt
    assert signal.getsignal(signal.SIGINT) is handler and os.getcwd() == cwd
    assert logging.getLogger().handlers == log_handlers  # Hydra's logging set-up would have closed them
    assert not any(getattr(handler, "stream", None) and handler.stream.closed for handler in log_handlers)


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = cli_in_process("collect", *SMALL, f"paths.dataset={blocker}/dataset", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: dataset directory '{blocker}/dataset' is not writable")


def test_unknown_subcommand():
    result = cli("fly")
    assert result.returncode == 2 and "unknown subcommand 'fly'" in result.stderr


def committed(split_dir) -> int:
    manifest = split_dir / "manifest.json"
    if not manifest.exists():
        return 0
    return sum(shard["episodes"] for shard in json.loads(manifest.read_text())["shards"])


def test_kill_and_resume(tmp_path):
    args = ["collect", "collect.episodes=16", "collect.val_fraction=0.25", "collect.episodes_per_shard=2",
            *SMALL, f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "agent.cli", *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    train_dir = tmp_path / "dataset" / "train"
    deadline = time.time() + 90
    while committed(train_dir) < 4 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = committed(train_dir)
    assert 4 <= killed_at < 12, "the kill should land mid-collection"
    assert len(EpisodeStore(train_dir)) == killed_at  # everything committed is readable

    result = cli("collect", *args[1:], "collect.workers=2")  # resumed by two worker processes
    assert result.returncode == 0, result.stderr
    store = EpisodeStore(train_dir)
    assert len(store) == 12 and store.verify() == []
    expected_seeds = [episode_seeds(0, "train", index)[0] for index in range(12)]
    assert store.array("seed").tolist() == expected_seeds  # resumed, not restarted nor duplicated
    assert len(EpisodeStore(tmp_path / "dataset" / "val")) == 4

    # the resumed episodes are exactly what an uninterrupted run in one process produces
    config = OmegaConf.load(tmp_path / "dataset" / "config.yaml")
    task = envs.make_from_config(config.env)
    try:
        for index in (killed_at - 1, killed_at, 11):
            reference = collect_episode(task, config.collect.policy, 10, *episode_seeds(0, "train", index))
            np.testing.assert_array_equal(store.episode(index)["frames"], reference["frames"])
            np.testing.assert_array_equal(store.episode(index)["actions"], reference["actions"])
    finally:
        task.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 700 KB filesystem of its own (a tmpfs: mounting one needs root), grown by `grow(size)`."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")

    def grow(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)

    yield mount_point, grow
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_is_one_line_and_the_rerun_resumes(small_disk):
    disk, grow = small_disk
    args = ["collect", "collect.episodes=8", "collect.val_fraction=0.25", "collect.episodes_per_shard=2", *SMALL,
            f"hydra.run.dir={disk / 'run'}"]
    full = cli(*args)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
    assert full.stderr.strip().splitlines()[-1].startswith("error: the disk is full (no space left on the device "
                                                           f"holding {disk / 'run'}); what was committed is kept")
    committed_before = committed(disk / "run" / "dataset" / "train")
    assert 0 < committed_before < 6
    grow("20m")
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    store = EpisodeStore(disk / "run" / "dataset" / "train")
    assert len(store) == 6 and store.verify() == []
    assert not list((disk / "run").rglob(".*.tmp*"))  # the killed write's temp files are gone


def test_multirun_sweep_with_the_basic_launcher(tmp_path):
    result = cli("collect", "-m", "collect.episodes=2,3", "collect.val_fraction=0.0", *SMALL,
                 f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [len(EpisodeStore(tmp_path / job / "dataset" / "train")) for job in ("0", "1")] == [2, 3]


def test_rerun_with_other_settings_is_refused_unless_overwrite(tmp_path):
    args = ["collect", "collect.episodes=4", "collect.val_fraction=0.25", *SMALL, f"hydra.run.dir={tmp_path}"]
    assert cli_in_process(*args).returncode == 0
    config_before = (tmp_path / "dataset" / "config.yaml").read_text()
    refused = cli_in_process(*args, "collect.episode_length=6")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"error: dataset split '{tmp_path / 'dataset' / 'train'}' was made with other settings "
        "(episode_length: 10 -> 6")
    assert (tmp_path / "dataset" / "config.yaml").read_text() == config_before  # nothing changed on disk
    assert EpisodeStore(tmp_path / "dataset" / "train").episode_length == 10

    assert cli_in_process(*args, "collect.episode_length=6", "run.overwrite=true").returncode == 0
    store = EpisodeStore(tmp_path / "dataset" / "train")
    assert store.episode_length == 6 and len(store) == 3 and store.verify() == []

    fewer = cli_in_process(*args, "collect.episode_length=6", "collect.episodes=2")  # 2 train episodes, 0 val
    assert fewer.returncode == 2 and fewer.stderr.strip().splitlines()[-1] == (
        f"error: dataset split '{tmp_path / 'dataset' / 'train'}' holds 3 episodes, more than the 2 asked for; "
        "ask for at least 3, or pass run.overwrite=true to collect it afresh")


def test_ctrl_c_always_stops(tmp_path):
    """Ctrl-C stops `collect` at once (status 130, what was committed kept, the rerun resumes); and a process
    whose KeyboardInterrupt is lost (here swallowed by a loop, as in a finalizer) still stops, hard."""
    args = ["collect", "collect.episodes=40", "collect.episodes_per_shard=2", *SMALL, f"hydra.run.dir={tmp_path}"]
    process = subprocess.Popen([sys.executable, "-m", "agent.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    train_dir = tmp_path / "dataset" / "train"
    deadline = time.time() + 120
    while committed(train_dir) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted: what was committed is kept" in stderr, stderr[-2000:]
    assert 2 <= committed(train_dir) < 36 and EpisodeStore(train_dir).verify() == []

    swallowing = ("import sys, time; from agent.cli import stop_on_interrupt; stop_on_interrupt(grace_s=1.0)\n"
                  "ready = False\n"
                  "while True:\n    try:\n"  # 'ready' is said inside the try: a Ctrl-C right after it is swallowed too
                  "        if not ready:\n            print('ready', flush=True)\n            ready = True\n"
                  "        time.sleep(0.01)\n    except KeyboardInterrupt:\n        pass\n")
    process = subprocess.Popen([sys.executable, "-c", swallowing], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted (hard stop)" in stderr, stderr[-2000:]
