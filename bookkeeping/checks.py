"""One-line errors for bad config values, checked before a stage reads or writes anything.

    check_ints(cfg.collect, "collect", ["episodes", "episode_length"])     # positive ints
    check_numbers(cfg.probe.attentive, "probe.attentive", ["lr"], positive=True)
    check_int_list(cfg.evaluate, "evaluate", "seeds")                       # [0, 1, 2]

Each error names the dotted key, the bad value and what was expected, e.g.
`probe.frame_stride=0 is invalid; expected a positive int`.
"""
from __future__ import annotations

from typing import Iterable

from omegaconf import OmegaConf


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value):
    """A config value as the user wrote it (lists and dicts as plain Python)."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def check_ints(section, prefix: str, keys: Iterable[str], minimum: int = 1, nullable: bool = False,
               null_means: str = "") -> None:
    """Each `section[key]` an int >= minimum (1: "a positive int", 0: "a non-negative int"), or with
    `nullable` also None (`null_means` says what None does, for the message)."""
    wanted = {1: "a positive int", 0: "a non-negative int"}.get(minimum, f"an int >= {minimum}")
    if nullable:
        wanted += f" or null{f' ({null_means})' if null_means else ''}"
    for key in keys:
        value = section[key]
        if (value is not None or not nullable) and (not is_int(value) or value < minimum):
            name = f"{prefix}.{key}" if prefix else key
            raise ValueError(f"{name}={shown(value)!r} is invalid; expected {wanted}")


def check_numbers(section, prefix: str, keys: Iterable[str], positive: bool = False) -> None:
    """Each `section[key]` a number > 0 (`positive`) or >= 0."""
    for key in keys:
        value = section[key]
        if not is_number(value) or value < 0 or (positive and value == 0):
            raise ValueError(f"{prefix}.{key}={shown(value)!r} is invalid; expected a "
                             f"{'positive' if positive else 'non-negative'} number")


def check_int_list(section, prefix: str, key: str) -> list[int]:
    """`section[key]` a non-empty list of distinct non-negative ints (seeds); returns it."""
    value = section[key]
    values = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    if not values or any(not is_int(item) or item < 0 for item in values) or len(set(values)) != len(values):
        raise ValueError(f"{prefix}.{key}={shown(value)!r} is invalid; expected a non-empty list of distinct "
                         "non-negative ints, e.g. [0,1,2]")
    return values


def check_number_list(section, prefix: str, key: str) -> list[float]:
    """`section[key]` a non-empty list of positive numbers; returns it."""
    value = section[key]
    values = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    if not values or any(not is_number(item) or item <= 0 for item in values):
        raise ValueError(f"{prefix}.{key}={shown(value)!r} is invalid; expected a non-empty list of positive numbers")
    return values


def angular_position_mask(angular_positions, positions: int) -> tuple[bool, ...]:
    """A task's `angular_positions` (one flag for all qpos, or one per qpos) -> one flag per qpos."""
    if isinstance(angular_positions, bool):
        return (bool(angular_positions),) * positions
    mask = tuple(bool(flag) for flag in angular_positions)
    if len(mask) != positions:
        raise ValueError(f"angular_positions={list(mask)} has {len(mask)} flags; "
                         f"expected one per position ({positions})")
    return mask
