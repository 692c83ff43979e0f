"""The amortized agents: the goal policy trains on the micro run's latent cache, acts within 5 ms, runs
episodes through the real evaluation, and is the planner's initial mean in amortized + CEM."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from agent.amortized import AmortizedAgent
from agent.build import build_agent
from agent.run_config import load_run_config
from world_model.goal_policy import GoalPolicy, PolicyConfig, load_goal_policy
from world_model.latent_cache import LatentCache
from world_model.policy_training import HindsightData, main as train_policy, policy_settings
from world_model.predictor import load_predictor


@pytest.fixture(scope="module")
def policy_run(micro_run_dir, tmp_path_factory):
    """The micro run's config with a goal policy trained for 30 steps into a folder of its own."""
    cfg = load_run_config(micro_run_dir)
    cfg.paths.policy = str(tmp_path_factory.mktemp("policy"))
    cfg.policy.steps, cfg.policy.batch_size = 30, 32
    train_policy(cfg)
    return cfg


def test_policy_acts_with_the_right_shape_within_5_ms():
    """The quick preset's sizes: 128 latent values per frame, a 4-value readout, 5 blocks of 5 x 2 actions."""
    policy = GoalPolicy(PolicyConfig(latent_size=128, proprio_dim=0, readout_dim=4, block_dim=10, blocks=5)).eval()
    latents, goal, readout = torch.randn(1, 1, 128), torch.randn(1, 1, 128), torch.randn(1, 4)
    times = []
    with torch.no_grad():
        for _ in range(50):
            started = time.perf_counter()
            chunk = policy(latents, goal, None, readout, readout)
            times.append(time.perf_counter() - started)
    assert chunk.shape == (1, 5, 10) and chunk.abs().max() <= 1
    assert np.median(times) < 0.005


def test_the_policy_trains_on_the_latent_cache_and_a_rerun_does_nothing(policy_run, capsys):
    policy, meta = load_goal_policy(policy_run.paths.policy)
    assert policy.config.blocks == policy_run.planner.horizon and policy.config.readout_dim == 0  # micro: no readout
    assert policy.config.latent_size > 0 and np.isfinite(meta["metrics"]["val_loss"])
    train_policy(policy_run)
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(ValueError, match="another predictor"):
        load_goal_policy(policy_run.paths.policy, predictor_sha256="0" * 64)


def test_bad_policy_settings_are_named(micro_run_dir):
    cfg = load_run_config(micro_run_dir)
    settings = OmegaConf.to_container(cfg.policy)
    for setting, message in [({"steps": 0}, "policy.steps=0 is invalid"),
                             ({"goal_steps": 0}, r"policy.goal_steps=0 is invalid; expected a positive int or null "
                                                 r"\(2 x predictor.block\)"),
                             ({"blocks": 0}, r"policy.blocks=0 is invalid; expected a positive int or null"),
                             ({"stepz": 5}, "policy.stepz is not a policy setting"),
                             ({"proprio": "yes"}, "policy.proprio='yes' is invalid"),
                             ({"hold_fraction": 1.0}, r"policy.hold_fraction=1.0 is invalid; expected .* in \[0, 1\)"),
                             ({"hold_fraction": 0.1}, "policy.hold_fraction=0.1 needs policy.hold_action"),
                             ({"hold_action": [0, 2]}, r"policy.hold_action=\[0, 2\] is invalid")]:
        cfg.policy = {**settings, **setting}
        with pytest.raises(ValueError, match=message):
            policy_settings(cfg)


def test_a_hold_action_of_the_wrong_length_is_named_before_any_work(micro_run_dir, tmp_path):
    cfg = load_run_config(micro_run_dir)
    cfg.paths.policy, cfg.policy.hold_fraction, cfg.policy.hold_action = str(tmp_path / "policy"), 0.1, [0, 0, 0]
    with pytest.raises(ValueError, match=r"policy.hold_action=\[0, 0, 0\] has 3 values; expected 2"):
        train_policy(cfg)
    assert not (tmp_path / "policy").exists()


def test_hold_samples_aim_at_the_current_frame_with_the_hold_action(micro_run_dir):
    cfg = load_run_config(micro_run_dir)
    cache = LatentCache(Path(cfg.paths.latents) / "train")
    data = HindsightData(cache, load_predictor(cfg.paths.predictor)[0], None, None)
    hold_action = torch.tensor([0.25, -0.5])
    (latents, goal_latents, _, _, _), targets = data.sample(64, 5, 10, torch.Generator().manual_seed(0),
                                                            hold_fraction=0.5, hold_action=hold_action)
    hold = (targets == hold_action).all(-1).all(-1)  # (64,): every action of the chunk the hold action
    assert 10 < hold.sum() < 54
    torch.testing.assert_close(goal_latents[hold], latents[hold])
    assert all(not torch.equal(goal, current) for goal, current in zip(goal_latents[~hold], latents[~hold]))
    plain = data.sample(64, 5, 10, torch.Generator().manual_seed(0))
    unheld = data.sample(64, 5, 10, torch.Generator().manual_seed(0), hold_fraction=0.0, hold_action=hold_action)
    assert torch.equal(plain[1], unheld[1])  # without holding, the samples drawn before holding existed


def test_an_object_readout_the_run_lacks_is_named(micro_run_dir, tmp_path):
    cfg = load_run_config(micro_run_dir)
    cfg.paths.policy, cfg.policy.object_readout = str(tmp_path / "policy"), True
    with pytest.raises(ValueError, match="policy.object_readout=true, but .* has no latent readout"):
        train_policy(cfg)
    assert not (tmp_path / "policy" / "goal_policy.safetensors").exists()


def test_the_amortized_agent_runs_episodes_through_the_evaluation(policy_run, tmp_path):
    from agent.evaluate import main as evaluate

    cfg = policy_run.copy()
    cfg.paths.evaluation = str(tmp_path / "eval")
    metrics = evaluate(cfg, "amortized")
    assert metrics["episodes"] == cfg.evaluate.pairs and metrics["planner"] is None
    assert metrics["planning_latency"]["count"] >= 1  # one policy call per block, recorded as a plan
    records = (tmp_path / "eval" / "amortized" / "episodes.jsonl").read_text().splitlines()
    assert len(records) == cfg.evaluate.pairs and '"energies": [null' in records[0]


def test_an_amortized_evaluation_records_that_its_policy_reads_the_goal_from_the_nearest_frames(policy_run):
    """Evaluations made before the policy read its goal from the nearest frames are not resumed under it."""
    from agent.evaluate import evaluation_identity

    cfg = policy_run.copy()
    assert "policy_goal_positions" not in evaluation_identity(cfg, "amortized")  # the readout's: as before
    cfg.evaluate.energy.goal_positions = "nearest_frames"
    for kind in ("amortized", "amortized_cem"):
        assert evaluation_identity(cfg, kind)["policy_goal_positions"] == "nearest_frames"


def test_bad_effector_hold_settings_are_named(policy_run, tmp_path):
    import envs
    from agent.evaluate import main as evaluate

    cfg = policy_run.copy()
    cfg.paths.evaluation = str(tmp_path / "eval")
    cfg.evaluate.effector_hold.radius = -1
    with pytest.raises(ValueError, match=r"evaluate.effector_hold.radius=-1 is invalid; expected a non-negative"):
        evaluate(cfg, "amortized")
    cfg.evaluate.effector_hold.radius, cfg.evaluate.effector_hold.carried_radius = 0, -0.5
    with pytest.raises(ValueError, match=r"evaluate.effector_hold.carried_radius=-0.5 is invalid; expected a non-neg"):
        evaluate(cfg, "amortized")
    cfg.evaluate.effector_hold.carried_radius, cfg.evaluate.effector_hold.place_carried = 0.04, "yes"
    with pytest.raises(ValueError, match=r"evaluate.effector_hold.place_carried='yes' is invalid; expected true or f"):
        evaluate(cfg, "amortized")
    cfg.evaluate.effector_hold.place_carried = True
    cfg.evaluate.effector_hold.radius = 0.03
    task = envs.make_from_config(cfg.env)
    try:
        with pytest.raises(ValueError, match="evaluate.effector_hold.radius needs a task with an effector; Reacher"):
            build_agent(cfg, task, "amortized")
        cfg.evaluate.effector_hold.radius = 0
        agent = build_agent(cfg, task, "amortized")  # its policy reads no position readout (micro has none)
        with pytest.raises(ValueError, match="evaluate.effector_hold.radius=0.03 is invalid here; expected 0, "
                                             "or > 0 with a task that has an effector and a goal policy that reads "
                                             "the position"):
            AmortizedAgent(agent.world, agent.propose, agent.block, agent.action_dim, agent.hold, hold_radius=0.03)
        assert agent.carried_radius == 0 and not agent.place_carried  # without a hold the defaults do not apply
        with pytest.raises(ValueError, match="evaluate.effector_hold.carried_radius=0.04 is invalid here; expected 0, "
                                             "or > 0 with a hold radius > 0 and a task that senses what its gripper"):
            AmortizedAgent(agent.world, agent.propose, agent.block, agent.action_dim, carried_radius=0.04)
    finally:
        task.close()


def test_amortized_cem_starts_its_plan_from_the_policys_chunk(policy_run):
    """With one candidate and one iteration the plan is the planner's initial mean itself (candidate 0):
    the policy's chunk with the warm start, the bounds' midpoint (zeros) without it."""
    import envs

    cfg = policy_run.copy()
    cfg.planner = OmegaConf.merge(cfg.planner, {"samples": 1, "top_k": 1, "iterations": 1})
    task = envs.make_from_config(cfg.env)
    try:
        observation, info = task.reset(seed=0)
        agents = {}
        for kind in ("amortized_cem", "latent"):
            agents[kind] = build_agent(cfg, task, kind)
            agents[kind].reset(observation["pixels"][None], None, seeds=[0])
            agents[kind].act(observation["pixels"][None], info["state"][None])
        chunk = agents["amortized_cem"].warm_start(cfg.planner.horizon)  # (1, H, block*A) for the same frame
    finally:
        task.close()
    assert chunk.abs().sum() > 0
    torch.testing.assert_close(agents["amortized_cem"].plan, chunk)
    torch.testing.assert_close(agents["latent"].plan, torch.zeros_like(chunk))


@pytest.mark.parametrize("planner_name", ["cem", "icem"])
def test_plan_init_std_narrows_the_first_samples_around_the_warm_start(planner_name):
    """SamplingPlanner.plan(init_std=...) is the first iteration's spread: candidates stay near a trusted warm start."""
    from planners.cem import CEMPlanner
    from planners.icem import ICEMPlanner

    planner_class = {"cem": CEMPlanner, "icem": ICEMPlanner}[planner_name]
    planner = planner_class(action_dim=2, horizon=3, samples=64, top_k=4, iterations=1)
    mean = torch.full((1, 3, 2), 0.3)
    seen = {}

    def energy(actions):  # (1, S, H, D) -> (1, S), recording the spread of the candidates
        seen.setdefault("spread", []).append(float((actions - mean[:, None]).abs().max()))
        return actions.square().sum((-1, -2))

    planner.plan(energy, mean, init_std=0.01)
    planner.plan(energy, mean)
    assert seen["spread"][0] < 0.1 < seen["spread"][1]
