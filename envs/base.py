"""`PixelTask`: a goal-conditioned dm_control task with pixel observations behind the Gymnasium API.

A task file subclasses it, names the dm_control domain, hides the target, and defines a vectorised
`distances(states, goal_state)` and `success_threshold` (docs/architecture.md, "Adding a task"); everything else is
shared here.

    obs = {"pixels": uint8 (H, W, 3), "proprio": float32 (P,)}      # P = nq + nv
    state = float64 (nq + nv,)                                        # qpos then qvel
    action = float32 (A,) in [-1, 1]^A; one task step = `action_repeat` control steps
"""
from __future__ import annotations

import abc
import atexit
import weakref

import numpy as np
import gymnasium as gym
from gymnasium import spaces

from envs.rendering import configure_mujoco_gl

configure_mujoco_gl()

import mujoco  # noqa: E402  (after MUJOCO_GL is set)
from dm_control import suite  # noqa: E402


def check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size={image_size!r} is invalid; expected an int >= 16")
    return int(image_size)


_OPEN_TASKS: weakref.WeakSet = weakref.WeakSet()
_exit_hook_registered = False


def _close_open_tasks() -> None:
    for task in list(_OPEN_TASKS):
        task.close()


def close_at_exit(task: "PixelTask") -> None:
    """Close `task` at interpreter exit if nobody has. The hook is registered once the first renderer
    exists, so it runs before the hook with which the GL library tears its display down (exit hooks
    run last in, first out); otherwise every unclosed renderer prints an EGL traceback at exit."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(_close_open_tasks)
        _exit_hook_registered = True
    _OPEN_TASKS.add(task)


class PixelTask(gym.Env, abc.ABC):
    """Shared machinery: stepping with action repeat, offscreen rendering, state get/set, goals."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}
    domain: str = ""
    dm_task: str = "easy"
    hidden_geoms: tuple[str, ...] = ("target",)
    success_threshold: float = 0.0
    angular_positions: bool | tuple[bool, ...] = False  # qpos that are hinge angles (an image shows them only
                                                         # modulo 2 pi): one flag for all, or one per qpos
    proprio_indices: tuple[int, ...] | None = None  # the state entries the proprio holds; None: all (qpos, qvel)
    action_dim: int | None = None  # A; None: one per actuator of the model

    def __init__(
        self,
        image_size: int = 64,
        camera_id: int = 0,
        camera_fovy: float | None = None,
        action_repeat: int = 1,
        shadows: bool = False,
        reflections: bool = False,
        render_mode: str = "rgb_array",
    ):
        self._dm_env = suite.load(self.domain, self.dm_task, task_kwargs={"random": 0})
        self._physics = self._dm_env.physics
        model = self._physics.model.ptr
        geoms = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, index) for index in range(model.ngeom)]
        for name in self.hidden_geoms:
            if name not in geoms:
                raise ValueError(f"{type(self).__name__}.hidden_geoms names {name!r}, which the {self.domain} model "
                                 f"has no geom of; its named geoms: {', '.join(filter(None, geoms))}")
            model.geom_rgba[geoms.index(name), 3] = 0.0
        self._setup_rendering(model, image_size, camera_id, camera_fovy, action_repeat, shadows, reflections,
                              render_mode)
        close_at_exit(self)

    def _setup_rendering(self, model, image_size, camera_id, camera_fovy, action_repeat, shadows, reflections,
                         render_mode) -> None:
        """The renderer, the spaces and the settings every task shares, on a compiled `mujoco.MjModel`."""
        self.image_size = check_image_size(image_size)
        if int(action_repeat) < 1:
            raise ValueError(f"action_repeat={action_repeat!r} is invalid; expected an int >= 1")
        self.action_repeat = int(action_repeat)
        self.render_mode = render_mode
        if not 0 <= camera_id < model.ncam:
            raise ValueError(f"camera_id={camera_id!r} is invalid; expected 0..{model.ncam - 1}")
        self.camera_id = int(camera_id)
        if camera_fovy is not None:
            model.cam_fovy[self.camera_id] = float(camera_fovy)
        self._renderer = mujoco.Renderer(model, self.image_size, self.image_size)
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(shadows)
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = bool(reflections)
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = bool(reflections)
        self._pixels = np.empty((self.image_size, self.image_size, 3), dtype=np.uint8)

        self.nq, self.nv, action_dim = model.nq, model.nv, model.nu
        if self.proprio_indices is None:
            self.proprio_indices = tuple(range(self.nq + self.nv))
        if type(self).action_dim is not None:
            action_dim = type(self).action_dim
        self.action_space = spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "pixels": spaces.Box(0, 255, (self.image_size, self.image_size, 3), dtype=np.uint8),
                "proprio": spaces.Box(-np.inf, np.inf, (len(self.proprio_indices),), dtype=np.float32),
            }
        )
        self.goal_state: np.ndarray | None = None
        self._rollout_data: list | None = None

    # ----------------------------------------------------------------- task-specific
    @abc.abstractmethod
    def distances(self, states: np.ndarray, goal_state: np.ndarray) -> np.ndarray:
        """Vectorised success metric: states (..., nq + nv), goal_state (nq + nv,) -> (...)."""

    def distance(self, state: np.ndarray, goal_state: np.ndarray) -> float:
        """Distance to the goal in the task's success metric; success iff < success_threshold."""
        return float(self.distances(np.asarray(state), np.asarray(goal_state)))

    def success(self, state: np.ndarray, goal_state: np.ndarray) -> bool:
        return bool(self.distance(state, goal_state) < self.success_threshold)

    # ----------------------------------------------------------------- Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """options: `state` (nq + nv,) to start from; `goal_state` (nq + nv,) to reach, which sets the goal
        (`step` then reports success and distance) and puts its image in `info["goal_image"]`."""
        super().reset(seed=seed)
        self._reset_physics(int(self.np_random.integers(2**31 - 1)))
        options = options or {}
        if "state" in options:
            self.set_state(options["state"])
        info = {"state": self.get_state()}
        if "goal_state" in options:
            self.set_goal(options["goal_state"])
            info["goal_image"] = self.render_goal(self.goal_state)  # (H, W, 3): all a pixel agent sees of the goal
        return self._observation(), info

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action of shape {action.shape} is invalid; expected {self.action_space.shape}")
        substep_states = []
        for _ in range(self.action_repeat):
            self._step_physics(action)
            substep_states.append(self.get_state())
        reached = self.goal_state is not None and any(self.success(state, self.goal_state) for state in substep_states)
        info = {"state": substep_states[-1], "substep_states": np.stack(substep_states),  # (action_repeat, S)
                "success_substep": reached}
        reward = 0.0
        if self.goal_state is not None:
            info["distance"] = self.distance(info["state"], self.goal_state)
            reward = float(reached)
        return self._observation(), reward, False, False, info

    def render(self) -> np.ndarray:
        """rgb_array of the current state: uint8 (H, W, 3)."""
        self._renderer.update_scene(self._data, camera=self.camera_id)
        self._renderer.render(out=self._pixels)
        return self._pixels.copy()

    def close(self) -> None:
        if getattr(self, "_rollout_runner", None) is not None:
            self._rollout_runner.close()
            self._rollout_runner = None
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None

    # ----------------------------------------------------------------- physics (dm_control's here)
    @property
    def _model(self):
        """The compiled `mujoco.MjModel`."""
        return self._physics.model.ptr

    @property
    def _data(self):
        """Its `mujoco.MjData`."""
        return self._physics.data.ptr

    def _reset_physics(self, episode_seed: int) -> None:
        """The task's own random initial state, drawn from `episode_seed`."""
        self._dm_env.task._random = np.random.RandomState(episode_seed)
        self._dm_env.reset()

    def _step_physics(self, action: np.ndarray) -> None:
        """One control step of a clipped action."""
        self._dm_env.task.before_step(action, self._physics)
        self._physics.step(self._dm_env._n_sub_steps)
        self._dm_env.task.after_step(self._physics)

    # ----------------------------------------------------------------- state and goals
    def get_state(self) -> np.ndarray:
        """(nq + nv,) float64: qpos then qvel."""
        data = self._data
        return np.concatenate([data.qpos, data.qvel]).astype(np.float64)

    def set_state(self, state) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self.nq + self.nv,):
            raise ValueError(f"state of shape {state.shape} is invalid; expected ({self.nq + self.nv},)")
        with self._physics.reset_context():
            self._physics.data.qpos[:] = state[: self.nq]
            self._physics.data.qvel[:] = state[self.nq :]

    def proprio(self, states: np.ndarray) -> np.ndarray:
        """What the robot senses of its states: (..., nq + nv) -> float32 (..., P)."""
        return np.asarray(states)[..., list(self.proprio_indices)].astype(np.float32)

    def set_goal(self, goal_state) -> None:
        """Goal used by `step` for `info["success_substep"]`, `info["distance"]` and the reward."""
        self.goal_state = None if goal_state is None else np.asarray(goal_state, dtype=np.float64).copy()

    def render_goal(self, goal_state) -> np.ndarray:
        """Image of the scene at `goal_state`: uint8 (H, W, 3); the current state is restored."""
        saved = self.get_state()
        self.set_state(goal_state)
        image = self.render()
        self.set_state(saved)
        return image

    def simulate(self, initial_states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The true simulator as a batched model (for the oracle planner), via `mujoco.rollout`.

        initial_states (B, nq + nv), actions (B, T, A) in [-1, 1] -> states after every control
        step (B, T * action_repeat, nq + nv). Does not touch this task's own state.
        """
        from mujoco import rollout

        model, data = self._physics.model.ptr, self._physics.data.ptr
        if self._rollout_data is None:
            self._rollout_data = [mujoco.MjData(model) for _ in range(2)]
            self._rollout_runner = rollout.Rollout(nthread=len(self._rollout_data))
        batch, steps, _ = actions.shape
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        template = np.empty(mujoco.mj_stateSize(model, spec))
        mujoco.mj_getState(model, data, template, spec)
        full_states = np.repeat(template[None], batch, axis=0)  # (B, nstate)
        position = 1  # FULLPHYSICS = time, qpos, qvel, act, ...
        full_states[:, position : position + self.nq] = initial_states[:, : self.nq]
        full_states[:, position + self.nq : position + self.nq + self.nv] = initial_states[:, self.nq :]
        control = np.repeat(np.clip(actions, -1.0, 1.0), self.action_repeat * self._dm_env._n_sub_steps, axis=1)
        states, _ = self._rollout_runner.rollout([model] * batch, self._rollout_data, full_states,
                                                 control.astype(np.float64))
        states = states[:, self._dm_env._n_sub_steps - 1 :: self._dm_env._n_sub_steps]  # (B, T*repeat, nstate)
        return states[..., position : position + self.nq + self.nv]

    def _observation(self) -> dict[str, np.ndarray]:
        return {"pixels": self.render(), "proprio": self.proprio(self.get_state())}
