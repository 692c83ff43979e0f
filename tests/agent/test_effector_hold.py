"""The effector hold on OGBench's cube arm: zero actions let the lifted pinch sink, the PI hold keeps it still, and
a gripper that holds the cube keeps squeezing where a zero gripper command lets a loosened grasp drop the cube."""
from __future__ import annotations

import numpy as np
import pytest

import envs
from agent.effector_hold import EffectorHold
from agent.kinematics import SerialChain


@pytest.fixture(scope="module")
def cube():
    task = envs.make("cube", image_size=48)
    yield task
    task.close()


def pinch_drift(cube, hold: EffectorHold | None, seed: int, steps: int = 20) -> float:
    """Lift the arm, latch, then `steps` of the hold's actions (None: zero actions) -> how far the pinch moved (m)."""
    cube.reset(seed=seed)
    for _ in range(8):
        cube.step(np.array([0.0, 0.0, 0.5, 0.0, 0.0], np.float32))
    chain = SerialChain(cube._model, cube.effector_site)
    watcher = EffectorHold(chain, cube.effector_action_scale, cube.action_dim)
    watcher.reset(1)
    start = watcher.effector_positions(cube.get_state()[None])[0]
    if hold is not None:
        hold.reset(1)
        hold.latch(np.array([True]), cube.get_state()[None])
    for _ in range(steps):
        action = np.zeros((1, cube.action_dim), np.float32) if hold is None else hold.actions(cube.get_state()[None])
        cube.step(action[0])
    return float(np.linalg.norm(watcher.effector_positions(cube.get_state()[None])[0] - start))


def test_the_hold_keeps_the_lifted_pinch_still_where_zero_actions_let_it_sink(cube):
    hold = EffectorHold(SerialChain(cube._model, cube.effector_site), cube.effector_action_scale, cube.action_dim)
    for seed in (0, 1):
        assert pinch_drift(cube, None, seed) > 0.01        # zero actions: 1-2 mm per step
        assert pinch_drift(cube, hold, seed) < 0.002       # the PI hold: within 2 mm after 20 steps


def lifted_grasp(cube, seed: int) -> np.ndarray:
    """The first state of the scripted oracle's episode with the cube grasped and lifted above 12 cm."""
    cube.reset(seed=seed)
    policy = cube.scripted_policy(np.random.default_rng(seed), noise=0.0)
    policy.reset()
    for _ in range(80):
        cube.step(policy())
        state = cube.get_state()
        if state[cube.cube_position][2] > 0.12 and cube.grasping(state[None])[0]:
            return state
    raise AssertionError("the scripted oracle did not lift the cube in 80 steps")


def gripping_hold(cube) -> EffectorHold:
    return EffectorHold(SerialChain(cube._model, cube.effector_site), cube.effector_action_scale, cube.action_dim,
                        gripper_index=cube.gripper_action_index, grasping=cube.grasping)


def test_a_closed_gripper_keeps_squeezing_a_loosened_grasp(cube):
    state = lifted_grasp(cube, seed=0)
    plain = EffectorHold(SerialChain(cube._model, cube.effector_site), cube.effector_action_scale, cube.action_dim)
    heights = []
    for hold in (plain, gripping_hold(cube)):
        cube.set_state(state)
        cube.step(np.array([0.0, 0.0, 0.0, 0.0, -0.1], np.float32))  # the fingers loosen, as a policy's action may
        hold.reset(1)
        hold.latch(np.array([True]), cube.get_state()[None])
        for _ in range(20):
            cube.step(hold.actions(cube.get_state()[None])[0])
        heights.append(cube.get_state()[cube.cube_position][2])
    lifted = state[cube.cube_position][2]
    assert heights[0] < 0.05                # a zero gripper command: the cube slides out and lies on the table
    assert heights[1] > lifted - 0.015      # squeezing: it stays in the fingers


def test_only_grippers_that_hold_the_cube_squeeze(cube):
    closed = lifted_grasp(cube, seed=1)
    cube.reset(seed=1)
    states = np.stack([cube.get_state(), closed])  # (2, S): the gripper open at reset, on the lifted cube
    np.testing.assert_array_equal(cube.grasping(states), [False, True])
    hold = gripping_hold(cube)
    hold.reset(2)
    hold.latch(np.array([True, True]), states)
    np.testing.assert_array_equal(hold.actions(states)[:, cube.gripper_action_index], [0.0, 1.0])


def test_a_hold_latched_with_an_offset_carries_the_cube_there(cube):
    """`place_carried`'s latch: the target is the pinch moved by the offset, and the held cube follows it."""
    state = lifted_grasp(cube, seed=0)
    offset = np.array([[0.02, -0.015, 0.01]])  # (1, 3) metres, within the cube preset's 2.5 cm radius
    hold = gripping_hold(cube)
    cube.set_state(state)
    hold.reset(1)
    hold.latch(np.array([True]), state[None], offset)
    np.testing.assert_allclose(hold.targets, hold.effector_positions(state[None]) + offset)
    for _ in range(30):
        cube.step(hold.actions(cube.get_state()[None])[0])
    moved = cube.get_state()
    assert np.linalg.norm(hold.effector_positions(moved[None]) - hold.targets) < 0.003  # the pinch is there
    cube_shift = moved[cube.cube_position] - state[cube.cube_position]
    assert np.linalg.norm(cube_shift - offset[0]) < 0.005 and cube.grasping(moved[None])[0]  # and so is the cube


def test_only_latched_rows_move_and_a_latched_target_stays(cube):
    hold = EffectorHold(SerialChain(cube._model, cube.effector_site), cube.effector_action_scale, cube.action_dim)
    hold.reset(2)
    cube.reset(seed=0)
    states = np.stack([cube.get_state()] * 2)  # (2, S)
    hold.latch(np.array([False, True]), states)
    target = hold.targets[1].copy()
    moved = states.copy()
    moved[:, list(hold.chain.qpos_addresses)] += 0.05  # the arm has moved: row 1 is pulled back
    hold.latch(np.array([True, True]), moved)           # row 0 latches now; row 1 keeps its first target
    np.testing.assert_array_equal(hold.targets[1], target)
    actions = hold.actions(moved)
    assert np.abs(actions[1, :3]).sum() > 0 and np.all(actions[:, 3:] == 0)
    np.testing.assert_array_equal(actions[0], 0)  # latched where it stands: nothing to correct yet


def test_bad_hold_settings_are_named(cube):
    chain = SerialChain(cube._model, cube.effector_site)
    with pytest.raises(ValueError, match="action_scale=0.0, integral_gain=0.3, action_dim=5 is invalid"):
        EffectorHold(chain, 0.0, 5)
    with pytest.raises(ValueError, match="integral_gain=-1"):
        EffectorHold(chain, 0.05, 5, integral_gain=-1)
    with pytest.raises(ValueError, match="gripper_index=5 is invalid; expected None, or an index in \\[3, 5\\)"):
        EffectorHold(chain, 0.05, 5, gripper_index=5, grasping=cube.grasping)
    with pytest.raises(ValueError, match="gripper_index=4 is invalid"):
        EffectorHold(chain, 0.05, 5, gripper_index=4)  # without the task's grasping


def test_the_action_scale_is_ogbenchs(cube):
    np.testing.assert_array_equal(cube._ogbench.action_high[:3], cube.effector_action_scale)
