"""`jepa-agent`: one command, one subcommand per pipeline stage, each taking Hydra overrides.

Examples:
    jepa-agent tasks
    jepa-agent collect env=reacher collect.episodes=200 hydra.run.dir=runs/reacher
    jepa-agent pretrain hydra.run.dir=runs/reacher            # reads runs/reacher/dataset
    jepa-agent run experiment=quick hydra.run.dir=runs/quick  # the whole pipeline
    jepa-agent collect --cfg job                              # print the composed config

Every subcommand composes `configs/config.yaml` and works inside one run directory
(`hydra.run.dir`); see docs/architecture.md. Bad input ends with a one-line `error: ...` and exit
status 2; set JEPA_AGENT_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import errno
import importlib
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from agent.stages import SUBCOMMANDS
from bookkeeping.locks import directory_lock
from envs.rendering import configure_mujoco_gl

configure_mujoco_gl()  # before anything imports mujoco

import agent.config  # noqa: E402,F401  (registers the configs' resolvers, e.g. native_bf16, before Hydra composes)


USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, NotADirectoryError, FileExistsError,
               ModuleNotFoundError)  # a task's missing package


def disk_full(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a full disk: an OSError ENOSPC, a writer's wrapped message (torch.save,
    safetensors and ffmpeg report it in their own exception types), or numpy's short write ("N requested and M
    written", without an errno)."""
    while error is not None:
        message = str(error)
        if (getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in message
                or (isinstance(error, OSError) and re.search(r"\d+ requested and \d+ written", message))):
            return True
        error = error.__cause__ or error.__context__
    return False


def exit_with_error(error: BaseException) -> NoReturn:
    """Bad input: `error: <the message's first line>` on stderr, exit status 2."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: jepa-agent SUBCOMMAND [hydra overrides...]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {stage.summary}" for name, stage in SUBCOMMANDS.items()]
    lines += ["", "examples:", "  jepa-agent collect env=reacher collect.episodes=200 hydra.run.dir=runs/r"]
    return "\n".join(lines)


def resolve_run_dir(cfg) -> None:
    """Fill `cfg.run_dir` with Hydra's output directory unless the user set it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    if cfg.get("run_dir") is None:
        with open_dict(cfg):
            cfg.run_dir = HydraConfig.get().runtime.output_dir


READING_STAGES = ("evaluate",)  # read the run's outputs; each locks its own output too (agent/evaluate.py)


def remove_made_directories(directory: Path, existing: Path) -> None:
    """Remove `directory` and its parents below `existing` (what was there before this command), as long
    as they hold nothing."""
    for path in (directory, *directory.parents):
        if path == existing or existing not in path.parents:
            return
        try:
            path.rmdir()
        except OSError:  # not empty: stop
            return


def remove_temps_of_killed_runs(cfg) -> None:
    """After a stage that held the run directory exclusively succeeded: the temp files that earlier killed runs
    left in the run's folders. Not under torchrun's other ranks (rank 0 may still be writing), nor after an
    evaluation (others may be writing beside it under the shared lock): the next writing command cleans up."""
    from bookkeeping.io import remove_leftover_temps

    if int(os.environ.get("RANK", "0")) != 0:
        return

    for directory in dict.fromkeys([cfg.run_dir, *cfg.paths.values()]):  # paths may lie outside the run
        remove_leftover_temps(directory)


def check_common_keys(cfg) -> None:
    """The top-level keys every stage reads: one-line errors naming the bad value."""
    from bookkeeping.checks import check_ints

    check_ints(cfg, "", ("seed",), minimum=0)
    check_ints(cfg, "", ("threads",), nullable=True, null_means="torch's default")
    if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", str(cfg.device)):
        raise ValueError(f"device={cfg.device!r} is invalid; expected auto, cpu, cuda or cuda:N (or mps, xpu)")
    if not isinstance(cfg.run.overwrite, bool):
        raise ValueError(f"run.overwrite={cfg.run.overwrite!r} is invalid; expected true or false")


def check_overrides(argv: list[str]) -> None:
    """Compose and resolve the config once before Hydra does, so that an unknown group option, an
    unknown key or an unparsable override is a one-line ValueError too (Hydra prints several lines).
    Hydra's own flags (--cfg, --help, --multirun) are left to Hydra."""
    from omegaconf import OmegaConf

    from agent.config import compose_config, one_line_config_errors

    if any(arg.startswith(("-", "hydra.mode=")) for arg in argv):  # flags, sweeps: Hydra's own business
        return
    for arg in argv:
        key = arg.lstrip("+").split("=")[0]
        if key in MOVED_KEYS:
            raise ValueError(f"{arg}: {key} is now {MOVED_KEYS[key]}; set {MOVED_KEYS[key]}={arg.split('=', 1)[-1]}")
    with one_line_config_errors():
        OmegaConf.to_container(compose_config(".", argv), resolve=True)
        if any(arg.startswith("+") for arg in argv):  # (a compose costs 0.3-0.6 s of every command)
            check_added_keys(compose_config(".", [arg for arg in argv if not arg.startswith("+")]), argv)


MOVED_KEYS = {"planner.execute_blocks": "mpc.execute_blocks", "planner.shrink_horizon": "mpc.shrink_horizon"}
READ_BY_NAME = ("evaluate", "planner", "mpc", "policy")  # every key of these is in the defaults: an added one is unread


def check_added_keys(cfg, argv: list[str]) -> None:
    """`+section.key=value` adds a key that no stage reads: where it is a typo of an existing key of its
    section (`+evaluate.pairz=3`), it is refused, naming the key meant; in the sections of READ_BY_NAME (every
    key they have is in the default configs) any added key is refused. Other sections may pass added keys on
    (`+env.show_arm=true` reaches the task's constructor)."""
    import difflib

    from omegaconf import DictConfig, OmegaConf

    for arg in argv:
        if not arg.startswith("+") or arg.startswith("++") or "=" not in arg or "/" in arg.split("=")[0]:
            continue
        key = arg[1:].split("=")[0]
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not isinstance(parent, DictConfig) or name in parent:
            continue
        close = difflib.get_close_matches(name, [str(existing) for existing in parent], n=1, cutoff=0.75)
        if close:
            meant = f"{parent_key}.{close[0]}" if parent_key else close[0]
            raise ValueError(f"{arg} adds a key no stage reads; did you mean {meant}? (set existing keys without +)")
        if key.split(".")[0] in READ_BY_NAME:
            raise ValueError(f"{arg} adds a key no stage reads; expected one of {parent_key}'s keys: "
                             f"{', '.join(str(existing) for existing in parent)}")


def check_run_dir(argv: list[str]) -> None:
    """`hydra.run.dir=DIR` checked before Hydra creates it (and fails with a traceback, or writes into the
    current directory when DIR is empty): it must name a directory that can be made and written."""
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith("hydra.run.dir=")]
    if not values:
        return
    if not values[-1].strip():
        raise ValueError("hydra.run.dir= is empty; expected the run directory (e.g. hydra.run.dir=runs/NAME)")
    path = Path(values[-1]).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"hydra.run.dir={values[-1]} is a file; expected a directory")
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir():
        raise ValueError(f"hydra.run.dir={values[-1]} lies under {str(existing)!r}, which is a file; "
                         "expected a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"hydra.run.dir={values[-1]} cannot be written: {str(existing)!r} is read-only")


INTERRUPT_GRACE_S = 10.0


def stop_on_interrupt(grace_s: float = INTERRUPT_GRACE_S) -> None:
    """Ctrl-C raises KeyboardInterrupt as usual, and also starts a timer: a process still running `grace_s`
    later has lost the exception (raised inside a finalizer or a library's broad `except`, it is only printed
    as "Exception ignored") and exits hard, status 130. Every write is atomic, so a hard stop keeps what
    was committed, as a kill does."""

    def hard_stop() -> None:
        print("\ninterrupted (hard stop): what was committed is kept; rerun the same command to resume",
              file=sys.stderr, flush=True)
        os._exit(130)

    def on_interrupt(signum, frame) -> None:
        timer = threading.Timer(grace_s, hard_stop)
        timer.daemon = True  # a process that stops in time does not wait for it
        timer.start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)


def run_stage(name: str, argv: list[str]) -> None:
    import hydra

    module_name, function_name = SUBCOMMANDS[name].command.split(":")
    for arg in argv:
        if arg.split("=")[0] in ("--config-name", "-cn", "--config-path", "-cp"):
            exit_with_error(ValueError(
                f"{arg.split('=')[0]} is not supported: every command composes configs/config.yaml from a preset "
                "and overrides; to make a run again, use the command in its command.txt"))
    try:
        check_run_dir(argv)
        check_overrides(argv)
    except ValueError as error:
        exit_with_error(error)

    run_dirs = [Path(arg.split("=", 1)[1]).absolute() for arg in argv if arg.startswith("hydra.run.dir=")]
    existing = next(path for path in (run_dirs[-1], *run_dirs[-1].parents) if path.exists()) if run_dirs else None

    def task_function(cfg) -> None:
        stop_on_interrupt()
        resolve_run_dir(cfg)
        try:
            with directory_lock(cfg.run_dir, "run directory", shared=name in READING_STAGES,
                                command=f"jepa-agent {name} {' '.join(argv)}"):
                check_common_keys(cfg)
                if cfg.threads:
                    import torch

                    torch.set_num_threads(cfg.threads)
                getattr(importlib.import_module(module_name), function_name)(cfg)
                if name not in READING_STAGES:
                    remove_temps_of_killed_runs(cfg)
        except USER_ERRORS as error:
            if os.environ.get("JEPA_AGENT_DEBUG"):
                raise
            if run_dirs:  # a refused command leaves no empty directory behind
                remove_made_directories(run_dirs[-1], existing)
            exit_with_error(error)
        except KeyboardInterrupt:
            if os.environ.get("JEPA_AGENT_DEBUG"):
                raise
            print("\ninterrupted: what was committed is kept; rerun the same command to resume", file=sys.stderr)
            sys.exit(130)
        except Exception as error:
            if not disk_full(error) or os.environ.get("JEPA_AGENT_DEBUG"):
                raise
            exit_with_error(OSError(f"the disk is full (no space left on the device holding {cfg.run_dir}); what was "
                                    "committed is kept: free some space and rerun the same command to resume"))

    sys.argv = [f"jepa-agent {name}", *argv, f"hydra.job.name={name}"]  # the job's name: the subcommand
    hydra.main(config_path="../configs", config_name="config", version_base=None)(task_function)()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"error: unknown subcommand {name!r}; expected one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        sys.exit(2)
    if name == "tasks":  # reads no config and writes nothing, so it makes no Hydra run directory either
        from envs.registry import print_tasks

        print_tasks()
        return
    run_stage(name, rest)


if __name__ == "__main__":
    main()
