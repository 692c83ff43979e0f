"""A finished run's config, read back wherever the run directory now lives, by a version of jepa-agent that
may be newer than the one that made it.

    cfg = load_run_config("runs/quick", planner={"samples": 100})   # its paths re-rooted at runs/quick

Keys added to the configs since the run was made are filled with the values the run's own command (its
command.txt) gives them now, and a warning names them; evaluations record their settings, so one made before a
filled key existed is not resumed under it (agent.evaluate refuses, naming the key).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from agent.config import CONFIG_DIR, compose_config
from bookkeeping.io import flatten

RUN_PATHS = ("dataset", "encoder", "latents", "predictor", "evaluation", "pixel_model", "policy")  # a run's `paths`


def load_run_config(run_dir: str | Path, **overrides) -> DictConfig:
    """The config of a run directory, its paths re-rooted at `run_dir` wherever it now lives: the one
    `jepa-agent run` wrote, or for a run made stage by stage, the one `jepa-agent train` wrote beside
    the predictor. `overrides` replace config sections, e.g. `planner={"samples": 100}`."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        config_path = run_dir / "predictor" / "config.yaml"
    if not config_path.is_file() and (run_dir.parent / "config.yaml").is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is a folder inside a run directory; pass the run directory, "
                                f"{str(run_dir.parent)!r}")
    if not config_path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run directory (no config.yaml from `jepa-agent run`, "
                                f"no predictor/config.yaml from `jepa-agent train`); make one with "
                                f"`jepa-agent run hydra.run.dir={run_dir}`")
    saved = OmegaConf.load(config_path)
    saved = fill_keys_added_since(saved, config_path, run_dir)
    check_override_keys(saved, overrides)
    stage_outputs = {Path(saved.paths[name]).name: name for name in RUN_PATHS}
    if run_dir.name in stage_outputs and Path(str(saved.run_dir)).name != run_dir.name:
        raise ValueError(f"{str(run_dir)!r} is the {stage_outputs[run_dir.name]} folder of a run, not a run "
                         f"directory; pass the run directory, {str(run_dir.parent)!r}")
    cfg = OmegaConf.merge(saved, OmegaConf.create(overrides))
    cfg.run_dir = str(run_dir)
    for name in RUN_PATHS:
        cfg.paths[name] = str(run_dir / Path(cfg.paths[name]).name)
    if cfg.encoder.get("pretrain") is not None:  # an in-domain encoder lives in the run (official: a hub id)
        cfg.encoder.source = cfg.paths.encoder
    cfg.run.overwrite = bool(overrides.get("run", {}).get("overwrite", False))  # never inherited from the run
    return cfg


def fill_keys_added_since(saved: DictConfig, config_path: Path, run_dir: Path) -> DictConfig:
    """A run's config made by an older version lacks keys every config of this version has: they get the values
    the run's own command (its command.txt; else the default config) gives them now, and a warning names them and
    any of the command's overrides this version no longer accepts (left out)."""
    if not isinstance(saved, DictConfig) or not {"env", "paths"} <= set(saved):
        raise ValueError(f"{str(config_path)!r} is not a run's config (no env and paths sections); make the run "
                         "again with `jepa-agent run` into a new directory")
    command, overrides = run_command_overrides(run_dir)
    current, dropped = compose_accepted(run_dir, overrides)
    missing = missing_keys(OmegaConf.to_container(saved), OmegaConf.to_container(current))
    if not missing:
        return saved
    for key in missing:
        OmegaConf.update(saved, key, OmegaConf.select(current, key), force_add=True)
    shown = ", ".join(f"{key}={OmegaConf.select(saved, key)}" for key in missing[:5])
    shown += f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    origin = f"as `{command}` sets them now" if command else "this version's defaults: no readable command.txt"
    if dropped:
        origin += f", without {', '.join(dropped)}, which this version does not accept"
    warnings.warn(f"{str(config_path)!r} was made by an older version of jepa-agent and lacks keys added since; "
                  f"using {shown} ({origin})", stacklevel=3)
    return saved


def compose_accepted(run_dir: Path, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """The config the overrides compose now, and those of them it no longer accepts (each left out, in order)."""
    try:
        return compose_config(run_dir, overrides), []
    except ValueError:
        accepted, dropped = [], []
        for override in overrides:
            try:
                compose_config(run_dir, [*accepted, override])
                accepted.append(override)
            except ValueError:
                dropped.append(override)
        return compose_config(run_dir, accepted), dropped


def missing_keys(saved: dict, current: dict) -> list[str]:
    """The dotted keys of `current` that `saved` lacks: its top-level keys, and the keys of each section, except
    a group's section whose option (`name`) differs from the saved one's and keys under a leaf of `saved` (a
    section the run set to null)."""
    saved_leaves = flatten(saved)
    saved_keys = set(saved) | set(saved_leaves)
    expected = {name for name in current if name != "run_dir"}
    for name, section in current.items():
        if name == "run_dir" or not isinstance(section, dict):
            continue
        saved_section = saved.get(name)
        if isinstance(saved_section, dict) and saved_section.get("name") != section.get("name"):
            continue  # another option of a config group (planner=mppi, not cem): its keys are not the run's
        expected |= set(flatten({name: section}))

    def under_a_saved_leaf(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:end]) in saved_leaves for end in range(1, len(parts)))

    return sorted(key for key in expected if key not in saved_keys and not under_a_saved_leaf(key)
                  and not any(found.startswith(key + ".") for found in saved_keys))


def run_command_overrides(run_dir: Path) -> tuple[str | None, list[str]]:
    """The command in a run's command.txt (`jepa-agent run` writes it) and its config overrides, Hydra's own
    (hydra.run.dir) left out; (None, []) without one, or with one shlex cannot split."""
    import shlex

    command_path = run_dir / "command.txt"
    if not command_path.is_file():
        return None, []
    command = command_path.read_text().strip()
    try:
        words = shlex.split(command)[2:]  # after `jepa-agent run`
    except ValueError:  # unbalanced quotes: edited by hand
        return None, []
    return command, [word for word in words if "=" in word and not word.lstrip("+~").startswith("hydra.")]


def check_override_keys(saved: DictConfig, overrides: dict) -> None:
    """Every overridden key must be one of the run's config or of the default config (with the planner
    the overrides name), so that a typo is not silently ignored."""
    given = OmegaConf.to_container(OmegaConf.create(overrides))
    planner = (given.get("planner") or {}).get("name") if isinstance(given.get("planner"), dict) else None
    planners = {path.stem for path in (CONFIG_DIR / "planner").glob("*.yaml")}  # an unknown name: make_planner's error
    defaults = compose_config(".", [f"planner={planner}"] if planner in planners else [])
    known = set(flatten(OmegaConf.to_container(saved))) | set(flatten(OmegaConf.to_container(defaults)))
    unknown = [key for key in flatten(given)
               if not any(key == name or key.startswith(name + ".") or name.startswith(key + ".") for name in known)]
    if unknown:
        raise ValueError(f"unknown config keys {unknown} in the overrides; expected keys of the run's config.yaml, "
                         "e.g. planner.samples")
