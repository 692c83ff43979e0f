"""The same conformance checks over every registered task (dm_control suite style).

What they ask of a task: proprio = the state entries `proprio_indices` names, as float32; `distances`
vectorised over leading dimensions and 0 at the goal; `success_threshold` > 0, in the units of the positions,
so that moving any one position by half the threshold keeps the goal reached and moving some position by
three times it does not."""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from bookkeeping.checks import angular_position_mask

TASKS = envs.list_tasks()


@pytest.fixture(params=TASKS)
def task(request):
    env = envs.make(request.param, image_size=48)
    yield env
    env.close()


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match=r"task 'reacher' is registered twice in envs/registry.py"):
        envs.registry.registry(("reacher", "envs.reacher:Reacher", "a"), ("reacher", "envs.other:Other", "b"))


def test_registry_lists_the_tasks_and_rejects_unknown_names():
    assert {"reacher", "point_mass", "cube"} <= set(TASKS)
    from envs.registry import ENV_CONFIGS

    assert [name for name in TASKS if not (ENV_CONFIGS / f"{name}.yaml").exists()] == []  # `env=<name>` composes
    with pytest.raises(ValueError, match=r"unknown task 'cheetah'; registered tasks: .*reacher.*point_mass"):
        envs.make("cheetah")


def test_a_registered_task_without_an_env_config_is_named(monkeypatch):
    from agent.config import compose_config

    monkeypatch.setitem(envs.registry.TASKS, "cartpole", ("envs.reacher:Reacher", "a task just registered"))
    with pytest.raises(ValueError, match=r"env=cartpole is invalid; .* \(task 'cartpole' is registered: add "
                                         r"configs/env/cartpole.yaml"):
        compose_config(".", ["env=cartpole"])


def test_hiding_a_geom_the_model_lacks_is_refused_by_name():
    from envs.reacher import Reacher

    class MisnamedTarget(Reacher):
        hidden_geoms = ("goal",)

    with pytest.raises(ValueError, match=r"MisnamedTarget.hidden_geoms names 'goal', which the reacher model has "
                                         r"no geom of; its named geoms: .*target"):
        MisnamedTarget(image_size=32)


def test_gymnasium_check_env_passes(task):
    check_env(task, skip_render_check=False)


def test_spec(task):
    observation, info = task.reset(seed=0)
    assert observation["pixels"].shape == (48, 48, 3) and observation["pixels"].dtype == np.uint8
    indices = list(task.proprio_indices)
    assert observation["proprio"].dtype == np.float32 and observation["proprio"].shape == (len(indices),)
    assert len(set(indices)) == len(indices) and all(0 <= index < task.nq + task.nv for index in indices)
    np.testing.assert_array_equal(observation["proprio"], info["state"][indices].astype(np.float32))
    assert len(angular_position_mask(task.angular_positions, task.nq)) == task.nq  # one flag, or one per qpos
    assert task.action_space.low.min() == -1.0 and task.action_space.high.max() == 1.0
    assert info["state"].shape == (task.nq + task.nv,)


def test_determinism_under_a_seed(task):
    def rollout(seed):
        observation, _ = task.reset(seed=seed)
        pixels, states = [observation["pixels"]], []
        for action in np.random.default_rng(0).uniform(-1, 1, (10, task.action_space.shape[0])):
            observation, _, _, _, info = task.step(action)
            pixels.append(observation["pixels"])
            states.append(info["state"])
        return np.stack(pixels), np.stack(states)

    pixels_a, states_a = rollout(3)
    pixels_b, states_b = rollout(3)
    pixels_c, _ = rollout(4)
    np.testing.assert_array_equal(pixels_a, pixels_b)
    np.testing.assert_array_equal(states_a, states_b)
    assert not np.array_equal(pixels_a[0], pixels_c[0])


def test_rendering_is_not_blank_and_follows_the_state(task):
    task.reset(seed=0)
    state = task.get_state()
    image = task.render()
    assert image.std() > 1.0, "rendered image is blank"
    moved = state.copy()
    moved[: task.nq] += 0.15
    changed = task.render_goal(moved)
    assert (np.abs(changed.astype(int) - image.astype(int)).sum(-1) > 0).sum() >= 4
    np.testing.assert_array_equal(task.get_state(), state)  # render_goal restores the state
    np.testing.assert_array_equal(task.render(), image)


def test_set_state_round_trip(task):
    task.reset(seed=1)
    for _ in range(5):
        task.step(task.action_space.sample())
    state = task.get_state()
    image = task.render()
    task.reset(seed=2)
    task.set_state(state)
    np.testing.assert_allclose(task.get_state(), state)
    np.testing.assert_array_equal(task.render(), image)
    with pytest.raises(ValueError, match="state of shape"):
        task.set_state(np.zeros(3))


def test_success_and_distance_agree(task):
    threshold = task.success_threshold
    assert threshold > 0, (f"{type(task).__name__}.success_threshold={threshold}: "
                           "set the distance under which a goal is reached")
    task.reset(seed=5)
    goal = task.get_state()
    assert task.distance(goal, goal) == 0.0 and task.success(goal, goal)
    near, far = np.repeat(goal[None], task.nq, axis=0), np.repeat(goal[None], task.nq, axis=0)  # (nq, S)
    near[np.arange(task.nq), np.arange(task.nq)] += 0.5 * threshold  # one position moved per row
    far[np.arange(task.nq), np.arange(task.nq)] += 3.0 * threshold
    assert all(task.success(state, goal) for state in near)
    assert any(not task.success(state, goal) for state in far)
    states = np.stack([np.stack([goal, *near]), np.stack([goal, *far])])  # (2, 1 + nq, S)
    distances = task.distances(states, goal)
    assert distances.shape == states.shape[:-1], f"distances of (2, {1 + task.nq}, S) states: {distances.shape}"
    np.testing.assert_allclose(distances, [[task.distance(state, goal) for state in row] for row in states])


def test_step_reports_success_against_the_goal(task):
    task.reset(seed=7)
    task.set_goal(task.get_state())
    _, reward, _, _, info = task.step(np.zeros(task.action_space.shape))
    assert info["success_substep"] and reward == 1.0
    assert info["distance"] == pytest.approx(task.distance(info["state"], task.goal_state))


def test_a_task_left_open_is_closed_quietly_at_exit():
    """An unclosed renderer used to print an EGL traceback at interpreter exit: the exit hook closes
    every task still open, and then a script that leaves one open exits quietly."""
    import subprocess
    import sys

    from envs.base import _close_open_tasks

    task = envs.make("reacher", image_size=32)
    _close_open_tasks()
    assert task._renderer is None

    script = "import envs\ntask = envs.make('reacher')\ntask.reset(seed=0)\ntask.render()\n"
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr and "Exception ignored" not in finished.stderr, finished.stderr


@pytest.mark.parametrize("name", TASKS)
def test_every_task_is_a_gymnasium_id_with_its_goal_image_in_info(name):
    """`gymnasium.make("jepa_agent/<Name>-v0", image_size=...)` builds the task; a goal state given to reset
    sets the goal, puts its image in info, and step reports success against it."""
    import gymnasium

    env = gymnasium.make(envs.gymnasium_id(name), image_size=48)
    try:
        check_env(env.unwrapped, skip_render_check=True)
        _, info = env.reset(seed=0)
        goal_state = info["state"]
        observation, info = env.reset(seed=1, options={"goal_state": goal_state})
        np.testing.assert_array_equal(info["goal_image"], env.unwrapped.render_goal(goal_state))
        assert info["goal_image"].shape == observation["pixels"].shape
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert "distance" in info
        assert info["distance"] == pytest.approx(env.unwrapped.distance(info["state"], goal_state))
    finally:
        env.close()
