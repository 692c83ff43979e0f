"""The cube (OGBench visual-cube-single) beyond the conformance suite: the goal marker stays hidden, the
oracle's simulator is the task's own dynamics, the scripted policy moves the cube, and bad input."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import envs
from tests.conftest import REPO


@pytest.fixture(scope="module")
def cube():
    task = envs.make("cube", image_size=48)
    yield task
    task.close()


def test_frames_never_show_the_goal_marker(cube):
    """OGBench draws the target cube as a mocap body: moving it anywhere, even onto the cube, changes no pixel."""
    cube.reset(seed=0)
    image = cube.render()
    data = cube._data
    saved = data.mocap_pos.copy()
    for target in ([0.425, 0.0, 0.02], cube.get_state()[cube.cube_position], [0.3, 0.3, 0.1]):
        data.mocap_pos[:] = target
        np.testing.assert_array_equal(cube.render(), image)
    data.mocap_pos[:] = saved


def test_simulate_is_the_task_stepped(cube):
    """The oracle's model: `simulate` from a state equals stepping the task from it, and leaves the task as it was."""
    cube.reset(seed=1)
    start = cube.get_state()
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 6, 5))  # (B, T, A)
    predicted = cube.simulate(np.stack([start, start]), actions)  # (B, T, S)
    np.testing.assert_array_equal(cube.get_state(), start)
    for row in range(2):
        cube.set_state(start)
        stepped = [cube.step(action)[4]["state"] for action in actions[row]]
        np.testing.assert_allclose(predicted[row], np.stack(stepped), atol=1e-9)
    assert not np.allclose(predicted[0], predicted[1])


def test_the_oracle_planner_carries_the_cube_to_a_goal():
    """CEM with the true simulator (the oracle's world), started from a scripted episode's state where the
    cube is held in the air, reaches the cube's position 8 steps later in that episode: the planner, the
    simulator and the success test fit together."""
    from omegaconf import OmegaConf

    from agent.mpc import MPCAgent
    from agent.simulator_world import SimulatorWorld
    from envs.collect import collect_episode
    from planners.cem import CEMPlanner

    task = envs.make("cube", image_size=32)
    try:
        policy = OmegaConf.create({"kind": "scripted", "noise": 0.1, "noise_smoothing": 0.5, "random_fraction": 0.0})
        episode = collect_episode(task, policy, 120, reset_seed=0, policy_seed=0)
        states = np.concatenate([episode["qpos"], episode["qvel"]], axis=1)  # (T+1, S)
        lifted = int(np.argmax(episode["qpos"][:, task.cube_position.stop - 1] > 0.06))
        start, goal = states[lifted], states[lifted + 8]
        assert task.distance(start, goal) > task.success_threshold  # the cube must be carried there
        world = SimulatorWorld(task, block=2, aggregate="min")
        agent = MPCAgent(world, CEMPlanner(action_dim=10, horizon=3, samples=32, iterations=3, top_k=4),
                         block=2, action_dim=5, execute_blocks=1)
        task.set_state(start)
        task.set_goal(goal)
        agent.reset(task.render()[None], goal[None], seeds=[0])
        reached = False
        for _ in range(12):
            action = agent.act(task.render()[None], task.get_state()[None])
            reached |= task.step(action[0])[4]["success_substep"]
        assert reached, task.distance(task.get_state(), goal)
    finally:
        task.close()


def test_the_scripted_policy_grasps_and_lifts_the_cube():
    from envs.collect import collect_episode
    from omegaconf import OmegaConf

    task = envs.make("cube", image_size=32)
    try:
        policy = OmegaConf.create({"kind": "scripted", "noise": 0.1, "noise_smoothing": 0.5, "random_fraction": 0.0})
        episode = collect_episode(task, policy, 120, reset_seed=0, policy_seed=0)
        again = collect_episode(task, policy, 120, reset_seed=0, policy_seed=0)
    finally:
        task.close()
    cube_heights = episode["qpos"][:, task.cube_position.stop - 1]
    assert cube_heights.max() > 0.06  # lifted off the table (it rests at 0.02 m)
    assert episode["frames"].shape == (121, 32, 32, 3) and episode["proprio"].shape == (121, 14)
    np.testing.assert_array_equal(episode["frames"], again["frames"])  # seeds decide everything


def test_ogbench_evaluation_goals_are_its_own_and_reproducible(cube):
    """Protocol 2's pairs: OGBench's task_id 1-5, the cube at the task's start (jittered by up to 1 cm) and goal,
    the same under a seed and another under another seed; a task_id out of range is one line."""
    cube.ogbench_task(1, seed=7)
    task_infos = cube._ogbench_tasks.task_infos  # OGBench's own list of them
    assert len(task_infos) == 5
    for task_id, info in enumerate(task_infos, start=1):
        start, goal = cube.ogbench_task(task_id, seed=7)
        assert np.abs(start[cube.cube_position] - info["init_xyzs"][0]).max() < 0.011
        assert np.linalg.norm(goal[cube.cube_position] - info["goal_xyzs"][0]) < 0.005
        again = cube.ogbench_task(task_id, seed=7)
        np.testing.assert_array_equal(start, again[0])
        np.testing.assert_array_equal(goal, again[1])
    assert not np.array_equal(cube.ogbench_task(1, seed=8)[0], start)
    with pytest.raises(ValueError, match=r"OGBench task_id=6 is invalid; expected an int in \[1, 5\]"):
        cube.ogbench_task(6, seed=0)


def test_the_expert_reaches_ogbench_goals_through_the_evaluation_path():
    """The privileged ceiling: OGBench's scripted oracle, sent to each goal state, carries the cube there
    (episodes run by the evaluation's own batch runner, records keyed by OGBench task_id)."""
    from agent.episodes import run_batch
    from agent.pairs import ogbench_task_pairs
    from agent.mpc import ExpertAgent

    tasks = [envs.make("cube", image_size=32) for _ in range(3)]
    try:
        pairs = ogbench_task_pairs(tasks[0], 2, seed=0)
        records = run_batch(ExpertAgent(tasks[2]), tasks[:2], pairs, budget=70, seeds=[0, 1], record=[False, False])
    finally:
        for task in tasks:
            task.close()
    assert [record["task_id"] for record in records] == [1, 2]
    assert all(record["initial_distance"] > 0.1 for record in records)  # the cube must be carried 10+ cm
    assert all(record["success"] and record["held"] for record in records), records


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match=r"env_id='visual-cube-double-v0' is not supported; supported OGBench envs: "
                                         r"visual-cube-single-v0"):
        envs.make("cube", env_id="visual-cube-double-v0")
    from envs.policies import check_policy
    from envs.reacher import Reacher

    with pytest.raises(ValueError,
                       match=r"collect.policy.kind='scripted' is invalid for Reacher, which has no scripted"):
        check_policy({"kind": "scripted"}, Reacher)
    from agent.pairs import ogbench_task_pairs
    from agent.mpc import ExpertAgent

    reacher = envs.make("reacher", image_size=32)
    try:
        with pytest.raises(ValueError, match=r"evaluate.goals=ogbench_tasks needs an OGBench task \(cube\); Reacher"):
            ogbench_task_pairs(reacher, 5, seed=0)
        with pytest.raises(ValueError, match=r"evaluate.agent=expert needs a task with a scripted expert \(cube\); "):
            ExpertAgent(reacher)
    finally:
        reacher.close()


def test_a_missing_ogbench_is_one_line(tmp_path):
    """A broken or absent OGBench (here a package that fails to import) ends `collect env=cube` with one line."""
    (tmp_path / "ogbench").mkdir()
    (tmp_path / "ogbench" / "__init__.py").write_text("raise ImportError('No module named ogbench')\n")
    command = [sys.executable, "-m", "agent.cli", "collect", "env=cube", f"hydra.run.dir={tmp_path / 'run'}"]
    finished = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"},
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode != 0 and "Traceback" not in finished.stderr, finished.stderr
    assert finished.stderr.strip() == "error: the cube task needs OGBench: pip install ogbench==1.2.2", finished.stderr


def test_the_whole_pipeline_runs_on_the_cube(tmp_path):
    """`jepa-agent run` on the cube at micro scale: scripted data, pretraining, embedding, training (with the latent
    readout of the cube, and the cube's position readout from the token grid), the goal policy (reading both
    readouts and the proprio, with hold samples), and the latent (with the reach term), random, oracle, expert and
    amortized agents evaluated with videos; the amortized agent's effector hold latches where the readout says so."""
    import json

    from tests.conftest import cli

    run_dir = tmp_path / "run"
    result = cli("run", "experiment=micro", "env=cube", "collect.policy.kind=scripted",
                 "run.agents=[latent,random,oracle,expert,amortized]", "predictor.latent_readout.steps=20",
                 "policy.steps=20", "policy.proprio=true", "policy.hold_fraction=0.1", "policy.hold_action=[0,0,0,0,0]",
                 "predictor.readout.steps=20",
                 "predictor.readout.qpos_indices=[14,15,16]", "predictor.readout.grid_channels=4",
                 "predictor.latent_readout.qpos_indices=[14,15,16]", "evaluate.energy.latent_readout_weight=1",
                 "evaluate.energy.reach_weight=10", "evaluate.effector_hold.radius=0.03", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == "cube" and set(summary["agents"]) == {"latent", "random", "oracle", "expert", "amortized"}
    assert all(metrics["episodes"] == 2 for metrics in summary["agents"].values())
    assert list((run_dir / "eval" / "latent" / "videos").glob("*.mp4"))
    meta = json.loads((run_dir / "dataset" / "train" / "manifest.json").read_text())["meta"]
    assert meta["policy"]["kind"] == "scripted" and meta["proprio_dim"] == 14
    assert meta["angular_positions"] == [True] * 14 + [False] * 7  # the arm's hinges, not the cube's free joint
    policy = json.loads((run_dir / "policy" / "goal_policy.json").read_text())["config"]
    assert policy["readout_dim"] == 3 and policy["object_dim"] == 3  # the cube's x, y, z from either readout
    assert policy["proprio_dim"] == 14  # the arm's joints
    check_the_effector_hold_takes_over(run_dir)
    check_the_hold_looks_at_every_step_and_a_carried_cube_is_where_the_pinch_is(run_dir)


def check_the_hold_looks_at_every_step_and_a_carried_cube_is_where_the_pinch_is(run_dir):
    from agent.build import build_agent
    from agent.run_config import load_run_config
    from tests.agent.test_effector_hold import lifted_grasp

    cfg = load_run_config(run_dir)
    cfg.evaluate.effector_hold.radius = 1e-9  # nothing is that close: no latch at the first step
    task = envs.make_from_config(cfg.env)
    try:
        agent = build_agent(cfg, task, "amortized")
        assert agent.block > 1 and agent.carried_radius == 0.04  # the default
        goal = task.reset(seed=4)[0]["pixels"]  # another cube: read elsewhere
        observation, info = task.reset(seed=3)
        agent.reset(goal[None], None, seeds=[0])
        action = agent.act(observation["pixels"][None], info["state"][None])  # a block boundary
        assert not agent.hold.holding.any()
        agent.hold_radius = 100.0  # every frame from now on
        observation, _, _, _, info = task.step(action[0])
        agent.act(observation["pixels"][None], info["state"][None])  # inside the block: the hold still looks
        assert agent.hold.holding.all()

        grasp, free = lifted_grasp(task, seed=0), task.reset(seed=0)[1]["state"]
        states = np.stack([grasp, free])  # (2, S): the cube in the gripper, the cube on the table
        tokens = agent.world.encode(np.stack([task.render_goal(state) for state in states]))
        read = agent.propose.read_positions(tokens)  # (2, 3)
        pinch = agent.hold.effector_positions(states)
        agent.carried_radius = 100.0  # the micro readout is rough: any reading counts as near the pinch
        positions, carried = agent.cube_positions(tokens, states)
        np.testing.assert_allclose(positions, [pinch[0], read[1]])
        np.testing.assert_array_equal(carried, [True, False])

        assert agent.place_carried  # the default: the carried cube's target is the goal's cube as read
        agent.reset(np.stack([goal, goal]), None, seeds=[0, 1])
        agent.latch_reached(tokens, states)  # radius 100: both latch
        goal_cube = agent.propose.read_goal_positions().double().numpy()  # (2, 3)
        np.testing.assert_allclose(agent.hold.targets, [goal_cube[0], pinch[1]], atol=1e-6)
        agent.carried_radius = 0.0
        positions, carried = agent.cube_positions(tokens, states)
        np.testing.assert_allclose(positions, read)
        assert not carried.any()
    finally:
        task.close()


def check_the_effector_hold_takes_over(run_dir):
    """A radius no frame is outside of: every action from the first step is the hold's (yaw 0, the open gripper left
    as it is, x, y, z pulling the pinch back); radius 0: the policy's own chunk."""
    from agent.build import build_agent
    from agent.run_config import load_run_config

    cfg = load_run_config(run_dir)
    task = envs.make_from_config(cfg.env)
    try:
        actions = {}
        for radius in (0.0, 100.0):
            cfg.evaluate.effector_hold.radius = radius
            agent = build_agent(cfg, task, "amortized")
            observation, info = task.reset(seed=3)
            agent.reset(observation["pixels"][None], None, seeds=[0])
            actions[radius] = [agent.act(observation["pixels"][None], info["state"][None])[0]]
            for _ in range(3):
                observation, _, _, _, info = task.step(actions[radius][-1])
                actions[radius].append(agent.act(observation["pixels"][None], info["state"][None])[0])
            assert agent.hold.holding.all() if radius else agent.hold is None
    finally:
        task.close()
    held, followed = np.stack(actions[100.0]), np.stack(actions[0.0])  # (4, A)
    np.testing.assert_array_equal(held[:, 3:], 0)
    np.testing.assert_array_equal(held[0], 0)  # latched where it stands
    assert np.abs(held[1:, :3]).max() > 0  # then pulling the sinking pinch back
    assert not np.allclose(followed, held)
