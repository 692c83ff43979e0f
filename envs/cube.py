"""Cube: OGBench's `visual-cube-single` manipulation task, a UR5e arm with a Robotiq gripper and one cube.

Success when the cube's position is within 0.04 m of the goal state's cube position (OGBench's own
test). Actions are OGBench's 5-D relative end-effector control in [-1, 1]: x, y, z, yaw, gripper;
one task step is one 50 ms OGBench step (25 physics steps, target joints solved by OGBench's IK).

Frames come from OGBench's `front_pixels` camera with its pixel-task colours (purple gripper,
translucent arm) and never show the goal: the target cube is transparent and success never recolours
the cube. For speed (software rendering is bound by vertices), the UR5e links' 390k-vertex meshes
are hidden unless `show_arm=True` (the gripper stays), and frames are not multisampled: about 60
frames/s at 64 px instead of 8.

    state = (qpos (21), qvel (20)): the arm's 6 joints, the gripper's 8, the cube's free joint (xyz, quaternion)
    proprio = what the arm senses: its 6 joints and the gripper's driver joint, positions then velocities (14,)

`scripted_policy` is OGBench's noisy pick-and-place oracle (its `manipspace` data), for `collect`;
`ogbench_task(task_id, seed)` one of OGBench's five evaluation goals as (start_state, goal_state), for
`evaluate.goals=ogbench_tasks`; `goal_expert(goal_state, rng)` the same oracle sent to a goal from the true
state, the privileged ceiling `evaluate.agent=expert`.
"""
from __future__ import annotations

import numpy as np

from envs.base import PixelTask, check_image_size, close_at_exit

import mujoco  # noqa: E402,I001  (envs.base has set MUJOCO_GL)

SUPPORTED_ENVS = {"visual-cube-single-v0": "single"}  # OGBench id -> CubeEnv env_type
ARM_JOINTS, GRIPPER_DRIVER, CUBE_JOINT = tuple(range(6)), 6, 14  # joint ids in OGBench's cube model
GRASP_RANGE = (0.40, 0.50)  # rad of the gripper's driver joint where the cube stops the fingers (open 0, shut 0.8)
OGBENCH_TASK_COUNT = 5         # visual-cube-single's evaluation goals, task_id 1-5


def ogbench_cube_class():
    try:
        from ogbench.manipspace.envs.cube_env import CubeEnv
    except ImportError:
        raise ModuleNotFoundError("the cube task needs OGBench: pip install ogbench==1.2.2") from None
    return CubeEnv


def ogbench_cube_env(env_type: str):
    return ogbench_cube_class()(env_type=env_type, ob_type="pixels", width=64, height=64, visualize_info=False,
                                mode="data_collection", terminate_at_goal=False)


def ogbench_task_env(env_type: str):
    """OGBench's cube env in its task mode (its evaluation goals), reproducible under a reset seed, keeping the goal
    state it draws. OGBench makes a new, unseeded action space at each access and settles its goal scene with two
    of its random actions: here one action space, seeded by `reset`. OGBench renders its goal image at the goal
    state: here `render` keeps that state in `goal_state` instead."""
    import gymnasium

    class TaskEnv(ogbench_cube_class()):
        def __init__(self, **kwargs):
            self.seeded_action_space = gymnasium.spaces.Box(-1.0, 1.0, (5,), np.float32)
            self.goal_state = None
            super().__init__(**kwargs)

        @property
        def action_space(self):
            return self.seeded_action_space

        def reset(self, *, seed: int, options: dict):
            self.seeded_action_space.seed(seed)
            if self._model is not None:  # OGBench's task reset keeps the gripper's joints of the last state
                mujoco.mj_resetData(self._model, self._data)
            return super().reset(seed=seed, options=options)

        def render(self):
            self.goal_state = np.concatenate([self._data.qpos, self._data.qvel])

    return TaskEnv(env_type=env_type, ob_type="states", visualize_info=False, mode="task", terminate_at_goal=False)


class Cube(PixelTask):
    """A `PixelTask` on OGBench's cube scene (the dm_control parts of `PixelTask` are replaced here)."""

    success_threshold = 0.04  # m, OGBench's cube success radius
    hidden_geoms = ()         # OGBench's target cube is made transparent by OGBench itself (visualize_info off)
    action_dim = 5            # OGBench's end-effector action (the model's 7 actuators are set by its IK)
    effector_site = "ur5e/robotiq/pinch"  # between the fingers: where OGBench's actions move (the energy's reach term)
    effector_action_scale = 0.05  # metres of effector target per unit of the action's x, y, z (OGBench's action range)
    gripper_action_index = 4  # the action's gripper entry: a change of the *measured* opening (0 stops squeezing)
    ogbench_task_count = OGBENCH_TASK_COUNT  # its evaluation goals (`ogbench_task`)

    def __init__(self, image_size: int = 64, camera_id: int = 1, camera_fovy: float | None = None,
                 action_repeat: int = 1, shadows: bool = False, reflections: bool = False, show_arm: bool = False,
                 env_id: str = "visual-cube-single-v0", render_mode: str = "rgb_array"):
        if env_id not in SUPPORTED_ENVS:
            raise ValueError(f"env_id={env_id!r} is not supported; supported OGBench envs: {', '.join(SUPPORTED_ENVS)}")
        check_image_size(image_size)  # before the slow part
        self.env_id, self.show_arm = env_id, bool(show_arm)
        self._ogbench = ogbench_cube_env(SUPPORTED_ENVS[env_id])
        self._ogbench_tasks = None  # OGBench's env in its task mode, made when an evaluation goal is first asked for
        # OGBench's pixel colours are chosen when it builds the scene; resets and steps in its state mode then
        # compute no frame of OGBench's (its own renderer, 2 s of a make, would never be used)
        self._ogbench._mjcf_model = self._ogbench.build_mjcf_model()
        self._ogbench._ob_type = "states"
        self._ogbench.reset(seed=0)  # compiles the model
        model = self._ogbench._model
        if not show_arm:
            for geom in range(model.ngeom):
                mesh = model.geom_dataid[geom] if model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_MESH else -1
                name = model.mesh(mesh).name if mesh >= 0 else ""
                if name.startswith("ur5e/") and not name.startswith("ur5e/robotiq/"):
                    model.geom_rgba[geom, 3], model.geom_matid[geom] = 0.0, -1  # alpha 0: not drawn
        model.vis.quality.offsamples = 0
        cube_qpos = model.jnt_qposadr[CUBE_JOINT]
        self.cube_position = slice(cube_qpos, cube_qpos + 3)  # the cube's xyz within qpos
        self.gripper_driver_position = int(model.jnt_qposadr[GRIPPER_DRIVER])  # within qpos
        arm = [*ARM_JOINTS, GRIPPER_DRIVER]
        self.proprio_indices = tuple(int(i) for i in (*model.jnt_qposadr[arm], *(model.nq + model.jnt_dofadr[arm])))
        # the arm's hinges are angular; the cube's free joint is not
        self.angular_positions = tuple(bool(index < cube_qpos) for index in range(model.nq))
        self._setup_rendering(model, image_size, camera_id, camera_fovy, action_repeat, shadows, reflections,
                              render_mode)
        close_at_exit(self)

    # ----------------------------------------------------------------- physics (OGBench's)
    @property
    def _model(self):
        return self._ogbench._model

    @property
    def _data(self):
        return self._ogbench._data

    def _reset_physics(self, episode_seed: int) -> None:
        self._ogbench.reset(seed=episode_seed)  # random arm pose and cube pose, as OGBench collects data

    def set_state(self, state) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self.nq + self.nv,):
            raise ValueError(f"state of shape {state.shape} is invalid; expected ({self.nq + self.nv},)")
        model, data = self._model, self._data
        mocap_position, mocap_orientation = data.mocap_pos.copy(), data.mocap_quat.copy()  # the (hidden) target
        mujoco.mj_resetData(model, data)  # as dm_control's reset_context: no warm start or control carried over
        data.qpos[:], data.qvel[:] = state[: self.nq], state[self.nq :]
        data.mocap_pos[:], data.mocap_quat[:] = mocap_position, mocap_orientation
        mujoco.mj_forward(model, data)

    def _step_physics(self, action: np.ndarray) -> None:
        """One OGBench step without its observation: IK to the relative end-effector target, 25 physics steps."""
        env = self._ogbench
        env.set_control(action)
        env.pre_step()
        mujoco.mj_step(env._model, env._data, nstep=env._n_steps)
        mujoco.mj_forward(env._model, env._data)  # positions of the new state (frames then follow the state alone)
        mujoco.mj_rnePostConstraint(env._model, env._data)
        env.post_step()

    def simulate(self, initial_states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The true simulator for the oracle: initial_states (B, S), actions (B, T, A) -> states after every
        control step (B, T * action_repeat, S). OGBench solves IK in Python at every step, so this steps this
        task's own physics (about 700 steps/s) and restores its state afterwards."""
        saved = self.get_state()
        batch, steps, _ = actions.shape
        trajectories = np.empty((batch, steps * self.action_repeat, self.nq + self.nv))  # (B, T*repeat, S)
        for row, (state, row_actions) in enumerate(zip(initial_states, actions)):
            self.set_state(state)
            for step, action in enumerate(np.repeat(np.clip(row_actions, -1.0, 1.0), self.action_repeat, axis=0)):
                self._step_physics(action)
                trajectories[row, step] = self.get_state()
        self.set_state(saved)
        return trajectories

    # ----------------------------------------------------------------- the task
    def distances(self, states, goal_state) -> np.ndarray:
        """Euclidean distance (m) between the cube positions: (...,)."""
        states, goal_state = np.asarray(states), np.asarray(goal_state)
        return np.linalg.norm(states[..., self.cube_position] - goal_state[self.cube_position], axis=-1)

    def grasping(self, states: np.ndarray) -> np.ndarray:
        """states (B, S) -> (B,) bool: the gripper's driver joint (the proprio's) stopped in `GRASP_RANGE`, where
        something of the cube's 4 cm is between the fingers. On the held-out episodes of the scripted oracle the cube
        then lies within 1.9 cm of the pinch (1.2 cm at the 90th percentile; docs/experiments.md section 32)."""
        driver = np.asarray(states)[:, self.gripper_driver_position]  # (B,)
        return (driver > GRASP_RANGE[0]) & (driver < GRASP_RANGE[1])

    def scripted_policy(self, rng: np.random.Generator, noise: float = 0.1, noise_smoothing: float = 0.5,
                        random_fraction: float = 0.0):
        return PickAndPlacePolicy(self, rng, noise, noise_smoothing, random_fraction)

    def ogbench_task(self, task_id: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """OGBench's evaluation goal `task_id` (1-5, its `reset(options=dict(task_id=...))`): (start_state,
        goal_state), each (nq + nv,), drawn by OGBench's own task-mode reset under `seed`: the arm at a random
        pose, the cube at the task's start with a jitter of up to 1 cm and a random yaw; the goal scene (the cube
        at the task's goal, the arm at another random pose) settled by two random steps, where OGBench renders
        its goal image. Frames of the goal state come from `render_goal`, this task's camera."""
        valid = not isinstance(task_id, bool) and isinstance(task_id, (int, np.integer))
        if not valid or not 1 <= task_id <= OGBENCH_TASK_COUNT:
            raise ValueError(f"OGBench task_id={task_id!r} is invalid; expected an int in [1, {OGBENCH_TASK_COUNT}]")
        if self._ogbench_tasks is None:
            self._ogbench_tasks = ogbench_task_env(SUPPORTED_ENVS[self.env_id])
        env = self._ogbench_tasks
        env.reset(seed=seed, options={"task_id": int(task_id), "render_goal": True})
        start_state = np.concatenate([env._data.qpos, env._data.qvel])
        if start_state.shape != (self.nq + self.nv,) or env.goal_state is None:
            raise RuntimeError(f"OGBench's task mode gave a state of shape {start_state.shape} and no goal state; "
                               f"expected ({self.nq + self.nv},) and a goal state (ogbench==1.2.2)")
        return start_state, env.goal_state

    def goal_expert(self, goal_state: np.ndarray, rng: np.random.Generator) -> "GoalExpert":
        """OGBench's scripted pick-and-place oracle, sent to `goal_state`'s cube position (privileged state)."""
        return GoalExpert(self, goal_state, rng)

    def close(self) -> None:
        super().close()
        for name in ("_ogbench", "_ogbench_tasks"):
            if getattr(self, name, None) is not None:
                getattr(self, name).close()
                setattr(self, name, None)


class PickAndPlacePolicy:
    """OGBench's scripted cube oracle (`CubeMarkovOracle`: reach, grasp, lift, carry, place, retreat)
    towards random targets, a new one whenever it finishes, with smoothed Gaussian action noise (as
    OGBench's `play` data). `random_fraction` of the steps take a uniformly random action instead.
    All randomness comes from `rng` and the task's reset seed."""

    def __init__(self, task: Cube, rng: np.random.Generator, noise: float, noise_smoothing: float,
                 random_fraction: float):
        from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

        if noise < 0 or not 0 <= noise_smoothing < 1 or not 0 <= random_fraction <= 1:
            raise ValueError(f"collect.policy noise={noise}, noise_smoothing={noise_smoothing}, random_fraction="
                             f"{random_fraction} is invalid; "
                             "expected noise >= 0, smoothing in [0, 1), fraction in [0, 1]")
        self.task, self.rng = task, rng
        self.noise, self.smoothing, self.random_fraction = float(noise), float(noise_smoothing), float(random_fraction)
        self.oracle = CubeMarkovOracle(env=task._ogbench, min_norm=0.4)
        self.previous_noise = np.zeros(5)

    def reset(self) -> None:
        """Call after the task's reset: a new target and a fresh oracle."""
        self.task._ogbench.set_new_target(return_info=False)
        self.oracle._done, self.oracle._step = False, 0
        bounds = self.task._ogbench._arm_sampling_bounds  # where the arm retreats to (OGBench draws it from np.random)
        self.oracle._final_pos = self.rng.uniform(*bounds)
        self.oracle._final_yaw = self.rng.uniform(-np.pi, np.pi)
        self.previous_noise = np.zeros(5)

    def __call__(self) -> np.ndarray:
        if self.oracle.done:
            self.reset()
        action = self.oracle.select_action(None, self.task._ogbench.compute_ob_info())
        noise = self.rng.normal(0.0, self.noise, 5)
        self.previous_noise = self.smoothing * self.previous_noise + (1 - self.smoothing) * noise
        action = action + self.previous_noise
        if self.rng.uniform() < self.random_fraction:
            action = self.rng.uniform(-1.0, 1.0, 5)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class GoalExpert:
    """OGBench's scripted cube oracle driven to one goal from the true state: the privileged ceiling of the
    cube's evaluations (it reads the cube's pose, which the agents never see). `act(state)` puts the state
    into `task` (any Cube instance: it is only read), with OGBench's target at the goal's cube pose, and
    returns the oracle's action (5,) in [-1, 1]; the oracle's own phase memory lives in this object."""

    def __init__(self, task: Cube, goal_state: np.ndarray, rng: np.random.Generator):
        from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

        self.task, self.goal_state = task, np.asarray(goal_state, dtype=np.float64)
        self.oracle = CubeMarkovOracle(env=task._ogbench, min_norm=0.4, max_step=10**9)
        self.oracle._done, self.oracle._step, self.oracle._max_step = False, 0, 10**9
        self.oracle._final_pos = rng.uniform(*task._ogbench._arm_sampling_bounds)  # where it retreats to
        self.oracle._final_yaw = rng.uniform(-np.pi, np.pi)
        self.previous_action = np.zeros(5)

    def act(self, state: np.ndarray) -> np.ndarray:
        env = self.task._ogbench
        self.task.set_state(state)
        # the oracle reads the gripper's contact force, which the actuators' controls make: those of its last action
        env.set_control(self.previous_action)
        mujoco.mj_forward(env._model, env._data)
        mujoco.mj_rnePostConstraint(env._model, env._data)
        target = env._cube_target_mocap_ids[env._target_block]
        cube_start = self.task.cube_position.start
        cube_qpos = self.goal_state[cube_start : cube_start + 7]  # xyz, quaternion
        env._data.mocap_pos[target], env._data.mocap_quat[target] = cube_qpos[:3], cube_qpos[3:]
        self.previous_action = np.clip(self.oracle.select_action(None, env.compute_ob_info()), -1.0, 1.0)
        return self.previous_action.astype(np.float32)
