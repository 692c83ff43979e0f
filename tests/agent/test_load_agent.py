"""Loading a run's agent: `load_agent` from a run directory (made by `run`, stage by stage, or by an older version of
jepa-agent) gives an agent that drives an env loop; a wrong folder, task, predictor or key is refused in one line."""
from __future__ import annotations

import numpy as np
import pytest

import envs
from agent.build import load_agent
from agent.evaluate import main as evaluate
from tests.conftest import compose_config


def test_load_agent_drives_an_env_loop(micro_run_dir):
    agent = load_agent(micro_run_dir, planner={"samples": 8, "top_k": 2})
    task = envs.make("reacher", image_size=32)
    try:
        observation, info = task.reset(seed=0)
        goal_state = info["state"] + np.array([0.3, -0.2, 0, 0])
        agent.reset(task.render_goal(goal_state)[None], None, seeds=[0])  # the latent agent reads the image only
        for _ in range(7):
            action = agent.act(observation["pixels"][None], info["state"][None])
            assert action.shape == (1, 2) and np.abs(action).max() <= 1.0
            observation, _, _, _, info = task.step(action[0])
        assert len(agent.plans) >= 2  # execute_blocks=1 in the micro preset: replans every block
        larger = np.zeros((1, 48, 48, 3), dtype=np.uint8)  # the encoder would resize it and misread it silently
        with pytest.raises(ValueError, match=r"frames of 48 x 48 px are invalid for this run; expected 32 x 32"):
            agent.act(larger, info["state"][None])
        with pytest.raises(ValueError, match=r"frames of 48 x 48 px are invalid for this run; expected 32 x 32"):
            agent.reset(larger, goal_state[None], seeds=[0])
    finally:
        task.close()


def test_predictor_for_another_task_is_refused(micro_run_dir):
    task = envs.make("point_mass", image_size=32)
    try:
        with pytest.raises(ValueError, match="trained for task 'reacher'.*task 'point_mass'"):
            load_agent(micro_run_dir, task=task, env={"name": "point_mass"})
    finally:
        task.close()


def test_missing_predictor_names_the_command(tmp_path, tiny_dataset_dir):
    cfg = compose_config(tmp_path, [f"paths.dataset={tiny_dataset_dir}", "evaluate.agent=latent"])
    with pytest.raises(FileNotFoundError, match="jepa-agent train"):
        evaluate(cfg)


def test_run_directories_made_stage_by_stage_load_and_stage_folders_are_refused(micro_run_dir, tmp_path):
    """A run made stage by stage has no `config.yaml` of `run`: train's, beside the predictor, serves.
    A stage's folder (which holds a config.yaml of its own) is not taken for a run directory."""
    import shutil

    staged = tmp_path / "moved"
    shutil.copytree(micro_run_dir, staged, ignore=shutil.ignore_patterns("dataset", "eval"))
    (staged / "config.yaml").unlink()
    agent = load_agent(staged, planner={"samples": 8, "top_k": 2})
    assert agent.planner.samples == 8 and agent.world.predictor.config.action_dim == 2
    with pytest.raises(ValueError, match=r"'.*/predictor' is the predictor folder of a run, not a run directory"):
        load_agent(staged / "predictor")
    with pytest.raises(FileNotFoundError, match=r"'.*/none' is not a run directory"):
        load_agent(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match=r"'.*/eval' is a folder inside a run directory; pass the run "
                                                r"directory, '.*/run'"):
        load_agent(micro_run_dir / "eval")


def test_a_run_made_by_an_older_version_loads_with_its_commands_values_for_keys_added_since(micro_run_dir,
                                                                                             tmp_path):
    """A config.yaml without keys this version added (here paths.policy and evaluate.hold_steps) loads with the
    values the run's own command gives them now, named in a warning, from a folder whose name Hydra's override
    grammar would reject; the evaluations made before are not resumed under a setting they were not made with."""
    import shutil

    from omegaconf import OmegaConf

    from agent.run_config import load_run_config

    old = tmp_path / "old (copy) é"
    shutil.copytree(micro_run_dir, old)
    config = OmegaConf.load(old / "config.yaml")
    del config.paths["policy"], config.evaluate["hold_steps"]
    OmegaConf.save(config, old / "config.yaml")
    command = (old / "command.txt").read_text().strip()
    (old / "command.txt").write_text(f"{command} evaluate.hold_steps=3\n")
    with pytest.warns(UserWarning, match=r"config.yaml' was made by an older version of jepa-agent and lacks keys "
                                         r"added since; using evaluate.hold_steps=3, paths.policy=.*/old \(copy\) "
                                         r"é/policy \(as `jepa-agent run experiment=micro .* evaluate.hold_steps=3` "
                                         r"sets them now\)"):
        cfg = load_run_config(old)
    assert cfg.evaluate.hold_steps == 3 and cfg.paths.policy == str(old / "policy")
    assert load_agent(old).planner is not None
    with pytest.raises(ValueError, match=r"was made with other settings \(.*evaluate.hold_steps"):
        evaluate(cfg, "random")  # its episodes were held over 5 steps, not 3
    # keys of any section are filled (the preset's value, not the default's), and an override of the command
    # that this version no longer accepts is left out by name, not the whole command with it
    del config.planner["warm_start_std"], config.predictor["width"]
    OmegaConf.save(config, old / "config.yaml")
    (old / "command.txt").write_text(f"{command} planner.execute_blocks=2 evaluate.hold_steps=3\n")
    with pytest.warns(UserWarning, match=r"using evaluate.hold_steps=3, .*planner.warm_start_std=None, "
                                         r"predictor.width=32 \(as .*, without planner.execute_blocks=2, which this "
                                         r"version does not accept\)"):
        cfg = load_run_config(old)
    assert cfg.predictor.width == 32 and cfg.planner.warm_start_std is None and cfg.evaluate.hold_steps == 3
    (old / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ValueError, match=r"config.yaml' is not a run's config \(no env and paths sections\)"):
        load_run_config(old)


def test_load_agent_refuses_unknown_keys_and_another_task(micro_run_dir):
    with pytest.raises(ValueError, match=r"unknown config keys \['planner.sampels'\]"):
        load_agent(micro_run_dir, planner={"sampels": 100})
    # another planner's keys
    mppi = load_agent(micro_run_dir, planner={"name": "mppi", "temperature": 0.5, "samples": 8})
    assert type(mppi.planner).__name__ == "MPPIPlanner" and mppi.planner.temperature == 0.5
    task = envs.make("point_mass", image_size=32)
    try:  # the task given, not the run's config, is what the agent will act in
        with pytest.raises(ValueError, match="trained for task 'reacher'.*task 'point_mass'"):
            load_agent(micro_run_dir, task=task)
    finally:
        task.close()
