"""Forward kinematics of a MuJoCo serial chain in torch: joint angles -> a site's position, batched.

The reach term of the latent agent's energy (`evaluate.energy.reach_weight`) asks where the gripper will be
after a candidate plan. The predictor predicts the arm's proprio (its joint angles); this turns them into the
gripper's position with the robot's own model, for every candidate at once (B * K * H rows per call, on the
planner's device), exactly as MuJoCo's `mj_kinematics` places the site:

    chain = SerialChain(model, "ur5e/robotiq/pinch")        # hinge joints from the world body to the site
    chain.qpos_addresses                                    # (J,) the qpos entries it reads, root first
    positions = chain(joint_angles)                         # (..., J) -> (..., 3), world frame, metres

Only hinge joints may lie on the chain (a robot arm's); anything else is refused. No state of the model is
read after construction: the chain is the model's geometry at its reference pose (`qpos0`).
"""
from __future__ import annotations

import numpy as np
import torch

from envs.rendering import configure_mujoco_gl

configure_mujoco_gl()  # before mujoco is first imported

import mujoco  # noqa: E402,I001


def quaternion_matrix(quaternion: np.ndarray) -> np.ndarray:
    """(4,) w, x, y, z -> (3, 3) rotation matrix."""
    matrix = np.empty(9)
    mujoco.mju_quat2Mat(matrix, np.asarray(quaternion, dtype=np.float64))
    return matrix.reshape(3, 3)


def axis_rotations(axis: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotations by `angles` (...,) about the unit `axis` (3,) -> (..., 3, 3) (Rodrigues' formula)."""
    x, y, z = axis
    cross = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=angles.dtype, device=angles.device)
    outer = torch.outer(axis, axis).to(angles)
    sine, cosine = torch.sin(angles)[..., None, None], torch.cos(angles)[..., None, None]
    identity = torch.eye(3, dtype=angles.dtype, device=angles.device)
    return cosine * identity + sine * cross + (1.0 - cosine) * outer


class SerialChain:
    """The bodies from the world body to a site, with their hinge joints (module docstring)."""

    def __init__(self, model, site: str):
        try:
            site_id = model.site(site).id
        except KeyError:
            raise ValueError(f"site {site!r} is not in the model; expected one of its sites") from None
        bodies = []
        body = int(model.site_bodyid[site_id])
        while body != 0:
            if model.body_mocapid[body] >= 0:
                raise ValueError(f"body {model.body(body).name!r} on the chain to {site!r} is a mocap body; expected "
                                 "a serial chain of hinge joints")
            bodies.append(body)
            body = int(model.body_parentid[body])
        self.links = []  # root first: (offset (3,), rotation (3, 3), [(anchor (3,), axis (3,), qpos address, qpos0)])
        addresses = []
        for body in reversed(bodies):
            joints = []
            for joint in range(model.body_jntadr[body], model.body_jntadr[body] + model.body_jntnum[body]):
                if model.jnt_type[joint] != mujoco.mjtJoint.mjJNT_HINGE:
                    raise ValueError(f"joint {model.joint(joint).name!r} on the chain to {site!r} is not a hinge; "
                                     "expected a serial chain of hinge joints")
                address = int(model.jnt_qposadr[joint])
                axis = model.jnt_axis[joint] / np.linalg.norm(model.jnt_axis[joint])
                joints.append((torch.tensor(model.jnt_pos[joint], dtype=torch.float32),
                               torch.tensor(axis, dtype=torch.float32), address, float(model.qpos0[address])))
                addresses.append(address)
            self.links.append((torch.tensor(model.body_pos[body], dtype=torch.float32),
                               torch.tensor(quaternion_matrix(model.body_quat[body]), dtype=torch.float32), joints))
        self.site_offset = torch.tensor(model.site_pos[site_id], dtype=torch.float32)
        self.qpos_addresses = tuple(addresses)

    def __call__(self, joint_angles: torch.Tensor) -> torch.Tensor:
        """joint_angles (..., J), in `qpos_addresses` order -> the site's position (..., 3) in the world frame."""
        angles = joint_angles.float()
        leading = angles.shape[:-1]
        position = torch.zeros(*leading, 3, dtype=angles.dtype, device=angles.device)  # (..., 3)
        rotation = torch.eye(3, dtype=angles.dtype, device=angles.device).expand(*leading, 3, 3)  # (..., 3, 3)
        column = 0
        for offset, body_rotation, joints in self.links:
            position = position + rotation @ offset.to(angles.device)
            rotation = rotation @ body_rotation.to(angles.device)
            for anchor_offset, axis, _, reference in joints:
                anchor = position + rotation @ anchor_offset.to(angles.device)  # the joint's anchor stays put
                rotation = rotation @ axis_rotations(axis.to(angles.device), angles[..., column] - reference)
                position = anchor - rotation @ anchor_offset.to(angles.device)
                column += 1
        return position + rotation @ self.site_offset.to(angles.device)
