"""Forward kinematics in torch (the energy's reach term) against MuJoCo's own."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import envs  # noqa: F401  (MUJOCO_GL before mujoco)
from agent.kinematics import SerialChain

import mujoco  # noqa: E402,I001

ARM = """<mujoco><worldbody><body name="base" pos="0.1 0 0.2" quat="0.92 0 0.38 0">
  <joint name="shoulder" type="hinge" axis="0 0 1" pos="0 0.05 0" ref="0.3"/><geom size="0.05"/>
  <body name="upper" pos="0 0 0.4" euler="0.4 0 0.2"><joint name="elbow" type="hinge" axis="1 1 0"/><geom size="0.04"/>
    <body name="hand" pos="0.3 0 0"><joint name="wrist" type="{wrist}" axis="0 1 0"/><geom size="0.03"/>
      <site name="tip" pos="0.1 0.02 -0.05"/></body></body></body></worldbody></mujoco>"""


def site_positions(model, site: str, addresses, angles: np.ndarray) -> np.ndarray:
    data = mujoco.MjData(model)
    positions = []
    for row in angles:
        data.qpos[list(addresses)] = row
        mujoco.mj_kinematics(model, data)
        positions.append(data.site_xpos[model.site(site).id].copy())
    return np.array(positions)


def test_the_chain_places_the_site_where_mujoco_does():
    """Off-centre anchors, tilted axes, body rotations and a joint reference (`ref`, qpos0) all count."""
    model = mujoco.MjModel.from_xml_string(ARM.format(wrist="hinge"))
    chain = SerialChain(model, "tip")
    angles = np.random.default_rng(0).uniform(-3, 3, (16, 3))  # (B, J)
    expected = site_positions(model, "tip", chain.qpos_addresses, angles)
    torch.testing.assert_close(chain(torch.tensor(angles).view(4, 4, 3)), torch.tensor(expected, dtype=torch.float32)
                               .view(4, 4, 3), rtol=0, atol=1e-5)
    assert not np.allclose(expected[0], expected[1])  # the angles move the site: the check above can fail


def test_the_cube_arm_chain_reaches_the_gripper():
    from envs.cube import Cube

    task = Cube(image_size=32)
    try:
        chain = SerialChain(task._model, task.effector_site)
        assert chain.qpos_addresses == tuple(task.proprio_indices[:6])  # the arm's six joints, which it senses
        angles = task._model.qpos0[:6] + np.random.default_rng(1).uniform(-1, 1, (8, 6))
        expected = site_positions(task._model, task.effector_site, chain.qpos_addresses, angles)
        torch.testing.assert_close(chain(torch.tensor(angles)), torch.tensor(expected, dtype=torch.float32),
                                   rtol=0, atol=1e-5)
    finally:
        task.close()


def test_chains_that_are_not_hinges_or_sites_that_are_missing_are_refused():
    model = mujoco.MjModel.from_xml_string(ARM.format(wrist="slide"))
    with pytest.raises(ValueError, match="joint 'wrist' on the chain to 'tip' is not a hinge"):
        SerialChain(model, "tip")
    with pytest.raises(ValueError, match="site 'finger' is not in the model"):
        SerialChain(model, "finger")
