"""The effector hold on OGBench's cube arm: zero actions let the lifted pinch sink, the PI hold keeps it still."""
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


def test_the_action_scale_is_ogbenchs(cube):
    np.testing.assert_array_equal(cube._ogbench.action_high[:3], cube.effector_action_scale)
