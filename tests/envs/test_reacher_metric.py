"""Reacher's success metric: unwrapped by default (as published), wrapped on request."""
from __future__ import annotations

import numpy as np
import pytest

import envs
from envs.reacher import wrap_angle


def test_wrap_angle():
    np.testing.assert_allclose(wrap_angle(np.array([0.0, np.pi + 0.1, -np.pi - 0.1, 4 * np.pi])),
                               [0.0, -np.pi + 0.1, np.pi - 0.1, 0.0], atol=1e-12)


def test_unwrapped_and_wrapped_errors_differ_after_a_full_turn():
    goal = np.array([0.2, 0.1, 0.0, 0.0])
    state = goal + np.array([2 * np.pi, 0.0, 0.0, 0.0])
    unwrapped = envs.make("reacher", image_size=16)
    wrapped = envs.make("reacher", image_size=16, angle_error="wrapped")
    try:
        errors = unwrapped.joint_errors(state, goal)
        assert errors["unwrapped"][0] == pytest.approx(2 * np.pi) and errors["wrapped"][0] == pytest.approx(0.0)
        assert not unwrapped.success(state, goal) and wrapped.success(state, goal)
    finally:
        unwrapped.close()
        wrapped.close()


def test_bad_constructor_values_name_the_value():
    with pytest.raises(ValueError, match="angle_error='degrees'"):
        envs.make("reacher", angle_error="degrees")
    with pytest.raises(ValueError, match="image_size=8 is invalid; expected an int >= 16"):
        envs.make("reacher", image_size=8)
