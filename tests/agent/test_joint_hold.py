"""The joint hold (agent/joint_hold.py): on the real reacher, an arm that comes within the radius of the goal's joints,
as the world reads them from the goal image, is held there by PD control while the other envs follow their agent;
`evaluate.joint_hold` wraps only the agents it names, enters the evaluation's identity only then, and refuses bad
settings and tasks in one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agent.build import build_agent, make_goal_position_reader, with_joint_hold
from agent.evaluate import evaluation_identity, validate
from agent.joint_hold import JointHold
from agent.mpc import MPCAgent
from agent.worlds import LatentWorld
from envs.dataset import EpisodeStore
from planners import make_planner
from tests.world_model.test_train_predictor import embedded_run, train_config  # noqa: F401 (fixture)
from world_model import train_predictor
from world_model.latent_cache import load_stage_encoder
from world_model.position_readout import load_position_readout
from world_model.predictor import load_predictor


@pytest.fixture(scope="module")
def reading_world(tmp_path_factory, embedded_run):  # noqa: F811
    """(cfg, a LatentWorld whose position term reads the goal's joints from the nearest training frame)."""
    predictor_dir = tmp_path_factory.mktemp("hold") / "predictor"
    cfg = train_config(embedded_run, predictor_dir, "predictor.readout.steps=5", "predictor.readout.batch_size=16",
                       "predictor.readout.val_frames=20")
    train_predictor.main(cfg)
    cfg.evaluate.energy.goal_positions, cfg.evaluate.energy.goal_neighbours = "nearest_frames", 1
    encoder = load_stage_encoder(cfg)
    readout = load_position_readout(predictor_dir, encoder_fingerprint=encoder.fingerprint)
    reader = make_goal_position_reader(cfg, readout, encoder.fingerprint, "cpu")
    predictor, _ = load_predictor(predictor_dir)
    return cfg, LatentWorld(encoder, predictor, position_readout=readout, position_weight=1.0,
                            goal_position_reader=reader)


def test_an_arm_within_the_radius_is_held_at_the_goal_and_the_others_follow_their_agent(reading_world,
                                                                                         tiny_dataset_dir):
    cfg, world = reading_world
    block = world.predictor.config.block
    planner = make_planner({**cfg.planner, "samples": 8, "top_k": 2, "iterations": 1, "horizon": 2}, block * 2)
    agent = JointHold(MPCAgent(world, planner, block, 2, execute_blocks=1), radius=0.1, position_gain=1.0,
                      velocity_gain=0.1, joints=2)
    inner_actions = []
    inner_act = agent.inner.act

    def recorded_act(pixels, states):
        inner_actions.append(inner_act(pixels, states))
        return inner_actions[-1]

    agent.inner.act = recorded_act
    episode = EpisodeStore(tiny_dataset_dir / "train").episode(0)
    goal = episode["qpos"][5].astype(np.float64)  # a training frame: the nearest frame reads its joints exactly
    starts = [np.r_[goal + [0.08, -0.06], 2.0, -2.0],  # within 0.1 rad, swinging at 2 rad/s: held
              np.r_[goal + [1.5, 0.0], 0.0, 0.0]]      # far: follows the agent
    tasks = [envs.make("reacher", image_size=64) for _ in starts]
    try:
        observations = [task.reset(seed=0, options={"state": start})[0]["pixels"] for task, start in zip(tasks, starts)]
        agent.reset(np.repeat(episode["frames"][5:6], 2, axis=0), None, seeds=[0, 1])
        np.testing.assert_allclose(world.goal_positions.numpy()[0], goal, atol=1e-5)
        joint_errors = []
        for step in range(30):
            states = np.stack([task.get_state() for task in tasks])  # (2, 4)
            actions = agent.act(np.stack(observations), states)  # (2, 2)
            if step == 0:
                assert agent.holding.tolist() == [True, False]
            for row in np.flatnonzero(~agent.holding):
                np.testing.assert_array_equal(actions[row], inner_actions[-1][row])
            pd = np.clip(1.0 * (goal - states[0, :2]) - 0.1 * states[0, 2:], -1, 1)  # no wrap needed: |error| < pi
            np.testing.assert_allclose(actions[0], pd, atol=1e-6)
            observations = [task.step(action)[0]["pixels"] for task, action in zip(tasks, actions)]
            joint_errors.append(np.abs(tasks[0].get_state()[:2] - goal).max())
        assert max(joint_errors[-5:]) < tasks[0].success_threshold, joint_errors  # held, not swung through
        assert len(agent.plans) == 30 // block  # the inner agent's records: it still plans every block
        pushed = np.r_[goal + [0.5, 0.0], 0.0, 0.0]  # pushed out of the radius: the hold stays latched
        actions = agent.act(np.stack(observations), np.stack([pushed, states[1]]))
        assert agent.holding[0]
        np.testing.assert_allclose(actions[0], [-0.5, 0.0], atol=1e-6)  # 1 x 0.5 rad back towards the goal

        asked = len(inner_actions)  # every env within the radius: the inner agent is not asked at all
        agent.reset(np.repeat(episode["frames"][5:6], 2, axis=0), None, seeds=[0, 1])
        near = np.stack([starts[0], np.r_[goal + [-0.05, 0.09], 0.0, 1.0]])  # (2, 4)
        actions = agent.act(np.stack(observations), near)
        assert agent.holding.all() and len(inner_actions) == asked and not agent.plans
        np.testing.assert_allclose(actions, np.clip(goal - near[:, :2] - 0.1 * near[:, 2:], -1, 1), atol=1e-6)
        with pytest.raises(ValueError, match="act got pixels for 2 envs and states for 1; expected 2"):
            agent.act(np.stack(observations), near[:1])
        world.goal_positions = torch.tensor([[3.1, 0.0]], dtype=torch.float64)  # angles wrap: -3.1 is 0.083 short
        np.testing.assert_allclose(agent.to_goal(np.array([[-3.1, 0.0]])), [[6.2 - 2 * np.pi, 0.0]], atol=1e-9)
    finally:
        for task in tasks:
            task.close()


def test_the_setting_wraps_the_agents_it_names_and_refuses_bad_values(reading_world):
    from benchmarks.success_vs_speed import timed_seconds_per_action

    cfg, world = reading_world
    cfg = cfg.copy()
    inner = MPCAgent(world, make_planner(cfg.planner, world.predictor.config.block * 2), world.predictor.config.block,
                     2, execute_blocks=1)
    reacher = envs.make("reacher", image_size=64)
    try:
        assert with_joint_hold(cfg.evaluate.joint_hold, reacher, "latent", inner) is inner  # agents: [] (off)
        without_hold = evaluation_identity(cfg, "latent")
        cfg.evaluate.joint_hold.agents = ["latent"]
        cfg.evaluate.energy.position_weight, cfg.planner.samples, cfg.planner.top_k = 1.0, 8, 2
        assert isinstance(build_agent(cfg, reacher, "latent"), JointHold)  # as the evaluation builds it
        assert build_agent(cfg, reacher, "oracle").__class__ is MPCAgent
        cfg.evaluate.joint_hold.radius = 10.0  # every start latches at once: the benchmark times the planner alone
        assert timed_seconds_per_action(cfg, "latent", 1)[0] > 0
        cfg.evaluate.joint_hold.radius = 0.1
        with_hold = evaluation_identity(cfg, "latent")
        assert with_hold["evaluate"]["joint_hold"] == {"radius": 0.1, "position_gain": 1.0, "velocity_gain": 0.1}
        assert "joint_hold" not in without_hold["evaluate"]  # evaluations made before the setting existed resume
        cfg.evaluate.joint_hold.agents = ["amortized", "latent"]  # which other agents it wraps does not count
        assert evaluation_identity(cfg, "latent") == with_hold
        cfg.evaluate.joint_hold.velocity_gain = 0.2
        assert evaluation_identity(cfg, "latent")["evaluate"]["joint_hold"]["velocity_gain"] == 0.2
        world.position_weight = 0.0
        with pytest.raises(ValueError, match="needs an agent whose world reads the goal's joints .* "
                                             "position_weight=0.0; expected .*energy.position_weight > 0"):
            with_joint_hold(cfg.evaluate.joint_hold, reacher, "latent", inner)
    finally:
        world.position_weight = 1.0
        reacher.close()
    cube = envs.make("cube", image_size=64)
    try:
        with pytest.raises(ValueError, match=r"evaluate.joint_hold.agents=\['amortized', 'latent'\] is invalid for "
                                             r"the task Cube \(nq=.*\); expected a task whose actions drive its "
                                             r"joints one to one \(nq == nv == actions\) and whose proprio senses"):
            with_joint_hold(cfg.evaluate.joint_hold, cube, "latent", inner)
    finally:
        cube.close()
    for key, value, message in (("agents", ["oracle"], r"agents=\['oracle'\] is invalid; expected a list of distinct "
                                                       r"names of \['latent', 'amortized', 'amortized_cem'\]"),
                                ("agents", "amortized", r"agents='amortized' is invalid; expected a list"),
                                ("radius", 0.0, r"radius=0.0 is invalid; expected a positive number"),
                                ("velocity_gain", -1, r"velocity_gain=-1 is invalid; expected a non-negative number")):
        bad = cfg.copy()
        bad.evaluate.joint_hold[key] = value
        with pytest.raises(ValueError, match=f"evaluate.joint_hold.{message}"):
            validate(bad)
