"""Composing the root config from Python (tests, benchmarks, notebooks), as the CLI does, and the
resolvers the configs use (importing this module registers them)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def native_bf16(device: str) -> bool:
    """`${native_bf16:${device}}` in the configs: bf16 autocast where `device` computes bf16 natively.
    A bad or unavailable device is not this key's error: it answers False, and the device check names it."""
    from world_model.device import native_bf16 as answer

    try:
        return answer(device)
    except ValueError:
        return False


OmegaConf.register_new_resolver("native_bf16", native_bf16, replace=True)  # before any config is resolved


@contextmanager
def one_line_config_errors():
    """Hydra's and OmegaConf's errors (an unknown group option or key, an unparsable override, a missing
    interpolation), several lines each, -> one-line ValueErrors naming the bad key or override."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except MissingConfigException as error:
        group, _, option = str(error.missing_cfg_file).rpartition("/")
        if group and error.options:
            from envs.registry import TASKS

            new_task = ""
            if group == "env" and option in TASKS:  # a new task without its env config yet
                new_task = (f" (task {option!r} is registered: add configs/env/{option}.yaml, "
                            "docs/architecture.md: Adding a task)")
            raise ValueError(f"{group}={option} is invalid; expected one of: {', '.join(error.options)}"
                             + new_task) from None
        plugin_hint = ("; is its Hydra plugin installed (e.g. hydra-submitit-launcher)?"
                       if group.startswith("hydra/") else "")
        raise ValueError(str(error).splitlines()[0].rstrip(".") + plugin_hint) from None
    except (HydraException, OmegaConfBaseException) as error:
        lines = [line.strip().rstrip(".") for line in str(error).splitlines()
                 if line.strip() and not line.strip().startswith(("full_key", "object_type", "See https"))]
        if error.__cause__ is not None and str(error.__cause__).strip():
            lines.insert(1, str(error.__cause__).strip().splitlines()[0])
        subject = getattr(error, "full_key", None) or getattr(error, "override", None)  # the bad key or override
        raise ValueError((f"{subject}: " if subject else "") + "; ".join(lines)) from None


def command_line() -> str | None:
    """The `jepa-agent` command of the current Hydra job, as it could be typed again; None outside one."""
    import shlex

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    job = HydraConfig.get()  # the job's own overrides (one sweep job's, under -m), then where it ran
    return shlex.join(["jepa-agent", job.job.name, *job.overrides.task, f"hydra.run.dir={job.runtime.output_dir}"])


def compose_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """The root config with Hydra overrides and `run_dir` set explicitly (no Hydra run directory; set after
    composing, so that any path is taken as it is: Hydra's override grammar rejects `(`, `,` or `é`); a bad
    override is a one-line ValueError."""
    from hydra import compose, initialize_config_dir

    with one_line_config_errors(), initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=list(overrides))
    cfg.run_dir = str(run_dir)
    return cfg
