"""Composing the root config from Python (tests, benchmarks, notebooks), as the CLI does."""
from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """The root config with Hydra overrides and `run_dir` set explicitly (no Hydra run directory)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=[*overrides, f"run_dir={run_dir}"])
