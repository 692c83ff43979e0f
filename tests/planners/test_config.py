"""The `planner` config group composes with Hydra and `make_planner` builds what it names; the `mpc` section
(what the agent does with the plans) is checked by the agent and counts in the evaluation's identity.

The root config (configs/config.yaml) also lists groups still being written by others, so these
tests compose a minimal root in tmp_path that uses the real configs/planner/*.yaml files.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from planners import CEMPlanner, MPPIPlanner, make_planner

PLANNER_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "planner"
MPC_CONFIG = PLANNER_CONFIGS.parent / "mpc" / "default.yaml"


def compose_planner(tmp_path: Path, overrides: list[str]):
    config_dir = tmp_path / "configs"
    shutil.copytree(PLANNER_CONFIGS, config_dir / "planner")
    root = "defaults:\n  - planner: cem\n  - _self_\nseed: 0\nrun_dir: null\n"
    (config_dir / "config.yaml").write_text(root)
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base=None):
        return compose("config", overrides=[*overrides, "run_dir=" + str(tmp_path)])


@pytest.mark.parametrize(
    ("overrides", "planner_class", "own_setting"),
    [([], CEMPlanner, ("top_k", 30)), (["planner=mppi"], MPPIPlanner, ("temperature", 0.5))],
)
def test_each_planner_config_builds_its_planner(tmp_path, overrides, planner_class, own_setting):
    cfg = compose_planner(tmp_path, overrides)
    planner = make_planner(cfg.planner, action_dim=6)
    assert type(planner) is planner_class
    assert (planner.action_dim, planner.horizon, planner.samples, planner.iterations) == (6, 5, 300, 30)
    assert (planner.low, planner.high) == (-1.0, 1.0)
    assert getattr(planner, own_setting[0]) == own_setting[1]
    result = planner.plan(lambda actions: actions.square().sum(dim=(-1, -2)), batch_size=2)
    assert result.actions.shape == (2, 5, 6)


def test_overrides_reach_the_planner(tmp_path):
    overrides = ["planner=mppi", "planner.samples=50", "planner.temperature=0.2", "planner.seed=9"]
    cfg = compose_planner(tmp_path, overrides)
    planner = make_planner(cfg.planner, action_dim=2)
    assert (planner.samples, planner.temperature, planner.seed) == (50, 0.2, 9)


def test_config_files_share_their_keys():
    cem, mppi = (OmegaConf.load(PLANNER_CONFIGS / f"{name}.yaml") for name in ("cem", "mppi"))
    assert set(cem) - {"top_k"} == set(mppi) - {"temperature"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "ilqr"}, "planner.name='ilqr'"),
        ({"top_k": 500}, "planner.top_k=500"),
        ({"samples": 0}, "planner.samples=0: expected an integer >= 1"),
        ({"samples": "abc"}, "planner.samples='abc': expected an integer"),
        ({"init_std": "wide"}, "planner.init_std='wide': expected a number"),
    ],
)
def test_bad_planner_config_raises(change, message):
    cfg = OmegaConf.merge(OmegaConf.load(PLANNER_CONFIGS / "cem.yaml"), change)
    with pytest.raises(ValueError, match=message):
        make_planner(cfg, action_dim=2)



def test_mpc_is_its_own_section_and_counts_in_the_evaluation_only(tmp_path):
    from agent.config import compose_config
    from agent.pipeline import section_hash
    from agent.stages import STAGES

    base, other = (compose_config(tmp_path, overrides) for overrides in ([], ["mpc.execute_blocks=2"]))
    assert (base.mpc.execute_blocks, base.mpc.shrink_horizon) == (base.planner.horizon, False)
    assert not {"execute_blocks", "shrink_horizon"} & set(base.planner)
    assert section_hash(base, STAGES["evaluate"].sections) != section_hash(other, STAGES["evaluate"].sections)
    assert section_hash(base, STAGES["policy"].sections) == section_hash(other, STAGES["policy"].sections)


def test_a_policy_setting_counts_in_the_amortized_agents_evaluation_only(tmp_path):
    """`run` evaluates the amortized agents again when the goal policy changes (it once kept their old episodes)."""
    from agent.config import compose_config
    from agent.pipeline import section_hash
    from agent.stages import evaluation_sections

    base, other = (compose_config(tmp_path, overrides) for overrides in ([], ["policy.hold_fraction=0.1"]))
    for agent, counts in (("amortized", True), ("amortized_cem", True), ("latent", False), ("random", False)):
        sections = evaluation_sections(agent)
        assert (section_hash(base, sections) != section_hash(other, sections)) == counts, agent


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"execute_blocks": 6}, r"mpc.execute_blocks=6 is invalid; expected an integer in \[1, planner.horizon=5\]"),
        ({"execute_blocks": 0}, "mpc.execute_blocks=0 is invalid"),
        ({"execute_blocks": 2.5}, "mpc.execute_blocks=2.5 is invalid"),
        ({"shrink_horizon": "yes"}, "mpc.shrink_horizon='yes' is invalid; expected true or false"),
    ],
)
def test_bad_mpc_config_raises(change, message):
    from agent.build import mpc_settings

    assert mpc_settings(OmegaConf.load(MPC_CONFIG), horizon=5) == (5, False)
    with pytest.raises(ValueError, match=message):
        mpc_settings(OmegaConf.merge(OmegaConf.load(MPC_CONFIG), change), horizon=5)
