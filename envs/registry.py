"""Task registry. Adding a task (docs/architecture.md, "Adding a task"): a `PixelTask` subclass in its own file, one
entry in `TASKS`, and `configs/env/<name>.yaml`."""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

ENV_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "env"  # one `env` group option per task


def registry(*entries: tuple[str, str, str]) -> dict[str, tuple[str, str]]:
    """(name, "module:Class", one-line description) entries -> {name: ("module:Class", description)};
    a name given twice is refused (a dict literal would keep the last one silently)."""
    tasks: dict[str, tuple[str, str]] = {}
    for name, target, description in entries:
        if name in tasks:
            raise ValueError(f"task {name!r} is registered twice in envs/registry.py ({tasks[name][0]} and {target})")
        tasks[name] = (target, description)
    return tasks


TASKS = registry(
    ("reacher", "envs.reacher:Reacher", "dm_control reacher, 2 joints, target hidden, success: joints within 0.05 rad"),
    ("point_mass", "envs.point_mass:PointMass", "dm_control point_mass, target hidden, success: within 0.015 m"),
    ("cube", "envs.cube:Cube", "OGBench visual-cube-single, UR5e + gripper + cube, success: cube within 0.04 m"),
)


GYMNASIUM_NAMESPACE = "jepa_agent"


def gymnasium_id(name: str) -> str:
    """The Gymnasium id of a registered task: "point_mass" -> "jepa_agent/PointMass-v0"."""
    return f"{GYMNASIUM_NAMESPACE}/{''.join(part.capitalize() for part in name.split('_'))}-v0"


def register_with_gymnasium() -> None:
    """Every task as `gymnasium.make("jepa_agent/Reacher-v0", image_size=64, camera_id=0, ...)`."""
    import gymnasium

    for name, (target, _) in TASKS.items():
        if gymnasium_id(name) not in gymnasium.registry:
            gymnasium.register(id=gymnasium_id(name), entry_point=target)


def list_tasks() -> list[str]:
    return list(TASKS)


def task_class(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(TASKS)}")
    module_name, class_name = TASKS[name][0].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def registered_name(task) -> str | None:
    """The registry name of a task instance's class, e.g. "reacher"; None for an unregistered class."""
    return next((name for name in TASKS if type(task) is task_class(name)), None)


def make(name: str, **kwargs: Any):
    """Build a registered task: `make("reacher", image_size=64, camera_fovy=40)`."""
    cls = task_class(name)
    try:
        return cls(**kwargs)
    except TypeError as error:  # a setting the task does not take: one line naming it
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        if unexpected is None:
            raise
        setting = unexpected.group(1)
        if (ENV_CONFIGS / f"{name}.yaml").exists():
            raise ValueError(f"task {name!r} takes no setting {setting!r}: pass env={name} (its own env config), "
                             f"not env.name={name}") from None
        raise ValueError(f"task {name!r} takes no setting {setting!r} (another task's env config?); "
                         f"add configs/env/{name}.yaml") from None


def make_from_config(env_cfg) -> Any:
    """Build the task described by a config node of the `env` group (`name` plus constructor args)."""
    settings = dict(env_cfg)
    name = settings.pop("name")
    return make(name, **settings)


def print_tasks() -> None:
    """`jepa-agent tasks`: one line per registered task."""
    width = max(len(name) for name in TASKS)
    for name, (_, description) in TASKS.items():
        print(f"{name:<{width}}  {description}")
