"""Building agents from a config or from a finished run directory.

    agent = load_agent("runs/reacher", planner={"samples": 100})   # drive it in any env loop
    agent.reset(goal_images, goal_states, seeds=[0]); action = agent.act(pixels, states)
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from agent.joint_hold import JointHold, joint_hold_agents
from agent.mpc import Agent, ExpertAgent, MPCAgent, RandomAgent
from agent.run_config import load_run_config
from agent.stages import AGENTS, AMORTIZED_AGENTS, LATENT_AGENTS
from agent.simulator_world import SimulatorWorld
from agent.worlds import LatentWorld
from planners import make_planner

PLANNING_AGENTS = ("latent", "oracle", "pixel", "amortized_cem")  # plan with cfg.planner, cfg.mpc, cfg.evaluate.energy


def load_world_model(cfg: DictConfig, task, device: str):
    """The frozen encoder and trained predictor named by cfg.paths, checked against the task."""
    from world_model.latent_cache import load_stage_encoder
    from world_model.predictor import load_predictor

    from envs.registry import registered_name

    predictor_dir = Path(cfg.paths.predictor)
    predictor, meta = load_predictor(predictor_dir, device=device)
    action_dim = task.action_space.shape[0]
    task_name = registered_name(task) or cfg.env.name  # the task given, which may not be the config's
    if meta.get("task") not in (None, task_name) or predictor.config.action_dim != action_dim:
        raise ValueError(
            f"predictor at {str(predictor_dir)!r} was trained for task {meta.get('task')!r} with action_dim="
            f"{predictor.config.action_dim}; this evaluation is task {task_name!r} with action_dim={action_dim}"
        )
    encoder = load_stage_encoder(cfg)  # the same encode settings as the latent cache it was trained on
    fingerprint = meta.get("encoder_fingerprint")
    if fingerprint and fingerprint != encoder.fingerprint:
        raise ValueError(f"predictor was trained on latents of encoder {fingerprint}, "
                         f"but encoder {cfg.encoder.source!r} has fingerprint {encoder.fingerprint}")
    return encoder, predictor


def load_pixel_world(cfg: DictConfig, task, device: str):
    """`PixelWorld` with the pixel model of cfg.paths.pixel_model, checked against the task -> (world, block)."""
    from agent.pixel_world import PixelWorld
    from envs.registry import registered_name
    from world_model.pixel_model import load_pixel_model

    if cfg.get("pixel") is None:
        raise ValueError("the pixel agent needs the pixel world model's settings; pass world_model=pixel")
    model, meta = load_pixel_model(cfg.paths.pixel_model, device=device)
    task_name, action_dim = registered_name(task) or cfg.env.name, task.action_space.shape[0]
    if meta.get("task") != task_name or model.config.action_dim != action_dim:
        raise ValueError(f"pixel model at {str(cfg.paths.pixel_model)!r} was trained for task {meta.get('task')!r} "
                         f"with action_dim={model.config.action_dim}; this evaluation is task {task_name!r} with "
                         f"action_dim={action_dim}")
    world = PixelWorld(model, norm=str(cfg.pixel.energy), aggregate=cfg.evaluate.energy.aggregate,
                       image_size=int(cfg.env.image_size), autocast_bf16=bool(cfg.evaluate.autocast_bf16),
                       compile=bool(cfg.evaluate.compile))
    return world, model.config.block


def effector_chain(task, setting: str = "evaluate.energy.reach_weight"):
    """The kinematic chain from the world to the task's effector site (the energy's reach term, the effector hold)."""
    from agent.kinematics import SerialChain

    site = getattr(task, "effector_site", None)
    if site is None:
        raise ValueError(f"{setting} needs a task with an effector; {type(task).__name__} has none "
                         "(expected a manipulation task: the cube)")
    return SerialChain(task._model, site)


GOAL_POSITIONS = ("readout", "nearest_frames")


def make_goal_position_reader(cfg: DictConfig, readout, encoder_fingerprint: str, device: str):
    """None (the position readout reads the goal's positions), or the nearest training frames' positions
    (`evaluate.energy.goal_positions=nearest_frames`, world_model/nearest_frames.py)."""
    energy = cfg.evaluate.energy
    if energy.goal_positions not in GOAL_POSITIONS:
        raise ValueError(f"evaluate.energy.goal_positions={energy.goal_positions!r} is invalid; expected one of "
                         f"{list(GOAL_POSITIONS)}")
    if energy.goal_positions == "readout":
        return None
    if readout is None:
        raise ValueError("evaluate.energy.goal_positions=nearest_frames reads the goal's positions for the position "
                         "term; expected position_weight > 0")
    if readout.config.qpos_indices is not None:  # before the training cache is read (LatentWorld refuses it too)
        raise ValueError(f"evaluate.energy.goal_positions=nearest_frames reads the proprio's positions; this position "
                         f"readout reads qpos {list(readout.config.qpos_indices)}: expected goal_positions=readout")
    from world_model.latent_cache import LatentCache
    from world_model.nearest_frames import NearestFramePositions

    cache = LatentCache(Path(cfg.paths.latents) / "train", encoder_fingerprint)
    return NearestFramePositions.from_cache(cache, readout.angular.cpu(), energy.goal_neighbours).to(device)


def check_agent_kind(kind: str) -> str:
    if kind not in AGENTS:
        raise ValueError(f"evaluate.agent={kind!r} is invalid; expected one of {list(AGENTS)}")
    return kind


def build_agent(cfg: DictConfig, task, kind: str | None = None) -> Agent:
    """agent=latent | random | oracle | pixel | expert | amortized | amortized_cem for `task`, with the planner, MPC
    and energy settings of cfg. pixel: the pixel world model (`world_model=pixel`); expert: the task's scripted expert
    (privileged); amortized: the goal policy (`jepa-agent policy`) acts alone; amortized_cem: the latent agent
    whose plans start from the policy's chunk (pass fewer planner.iterations)."""
    kind = check_agent_kind(kind or cfg.evaluate.agent)
    action_dim = task.action_space.shape[0]
    if kind == "random":
        return RandomAgent(action_dim)
    if kind == "expert":
        from envs import make_from_config

        expert_task = make_from_config(cfg.env)  # the expert's own: it writes states into it
        try:
            return ExpertAgent(expert_task)
        except ValueError:
            expert_task.close()
            raise
    from world_model.device import resolve_device

    device = resolve_device(cfg.device)
    energy = cfg.evaluate.energy
    if kind in LATENT_AGENTS:
        encoder, predictor = load_world_model(cfg, task, device)
        block = predictor.config.block
        position_weight = float(energy.position_weight)
        readout = None
        if position_weight:
            from world_model.position_readout import load_position_readout

            readout = load_position_readout(cfg.paths.predictor, device, encoder.fingerprint)
        goal_position_reader = make_goal_position_reader(cfg, readout, encoder.fingerprint, device)
        from world_model.familiarity import load_reference

        latent_readout_weight = float(energy.latent_readout_weight)
        latent_readout = None
        if latent_readout_weight:
            from world_model.latent_readout import load_latent_readout

            latent_readout = load_latent_readout(cfg.paths.predictor, device)
        reach_weight, reach_chain = float(energy.reach_weight), None
        if reach_weight:
            reach_chain = effector_chain(task)
        world = LatentWorld(encoder, predictor, norm=energy.norm, aggregate=energy.aggregate,
                            autocast_bf16=bool(cfg.evaluate.autocast_bf16), compile=bool(cfg.evaluate.compile),
                            position_readout=readout, position_weight=position_weight,
                            proprio_indices=task.proprio_indices, state_size=task.nq + task.nv,
                            latent_readout=latent_readout, latent_readout_weight=latent_readout_weight,
                            image_size=int(cfg.env.image_size), reference=load_reference(cfg.paths.predictor, device),
                            latent_weight=float(energy.latent_weight),
                            reach_chain=reach_chain, reach_weight=reach_weight, reach_gate=task.success_threshold,
                            hold_radius=float(energy.hold_radius),
                            hold_velocity_weight=float(energy.hold_velocity_weight),
                            hold_action_weight=float(energy.hold_action_weight),
                            hold_position_weight=None if energy.hold_position_weight is None
                            else float(energy.hold_position_weight), goal_position_reader=goal_position_reader)
    elif kind == "pixel":
        world, block = load_pixel_world(cfg, task, device)
    else:
        block = int(cfg.predictor.block)
        world = SimulatorWorld(task, block, aggregate=energy.aggregate, hold_radius=float(energy.hold_radius))
    proposer = load_proposer(cfg, world, device) if kind in AMORTIZED_AGENTS else None
    if kind == "amortized":
        from agent.amortized import AmortizedAgent

        hold_settings, hold = cfg.evaluate.effector_hold, None
        if hold_settings.radius:
            from agent.effector_hold import EffectorHold

            hold = EffectorHold(effector_chain(task, "evaluate.effector_hold.radius"), task.effector_action_scale,
                                action_dim, float(hold_settings.integral_gain),
                                getattr(task, "gripper_action_index", None), getattr(task, "grasping", None))
        agent = AmortizedAgent(world, proposer, block, action_dim, hold, float(hold_settings.radius),
                               float(hold_settings.carried_radius) if hold is not None else 0.0,
                               hold is not None and hold_settings.place_carried)
    else:
        planner = make_planner(cfg.planner, block * action_dim, device="cpu" if kind == "oracle" else device)
        execute_blocks, shrink_horizon = mpc_settings(cfg.mpc, planner.horizon)
        agent = MPCAgent(world, planner, block, action_dim, execute_blocks, shrink_horizon=shrink_horizon,
                         warm_start=proposer,
                         warm_start_std=warm_start_std(cfg.planner) if proposer is not None else None)
    return with_joint_hold(cfg.evaluate.joint_hold, task, kind, agent)


def with_joint_hold(settings: DictConfig, task, kind: str, agent: Agent) -> Agent:
    """`agent` wrapped in a `JointHold` where `evaluate.joint_hold.agents` names its kind (agent/joint_hold.py)."""
    if kind not in joint_hold_agents(settings):
        return agent
    actions = task.action_space.shape[0]
    sensed = set(range(task.nq + task.nv)) <= set(task.proprio_indices)
    if not task.nq == task.nv == actions or not sensed:
        raise ValueError(f"evaluate.joint_hold.agents={list(settings.agents)} is invalid for the task "
                         f"{type(task).__name__} (nq={task.nq}, nv={task.nv}, {actions} actions); expected a task "
                         "whose actions drive its joints one to one (nq == nv == actions) and whose proprio senses "
                         "every qpos and qvel, or [] (off)")
    return JointHold(agent, float(settings.radius), float(settings.position_gain), float(settings.velocity_gain),
                     task.nq)


def mpc_settings(mpc_cfg, horizon: int) -> tuple[int, bool]:
    """`mpc.execute_blocks` (blocks executed before replanning) and `mpc.shrink_horizon`, checked."""
    execute_blocks, shrink_horizon = mpc_cfg.execute_blocks, mpc_cfg.shrink_horizon
    if isinstance(execute_blocks, bool) or not isinstance(execute_blocks, int) or not 1 <= execute_blocks <= horizon:
        raise ValueError(f"mpc.execute_blocks={execute_blocks!r} is invalid; expected an integer in [1, "
                         f"planner.horizon={horizon}]")
    if not isinstance(shrink_horizon, bool):
        raise ValueError(f"mpc.shrink_horizon={shrink_horizon!r} is invalid; expected true or false")
    return execute_blocks, shrink_horizon


def warm_start_std(planner_cfg) -> float | None:
    """`planner.warm_start_std`: amortized + CEM's first std around the policy's chunk."""
    value = planner_cfg.warm_start_std
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"planner.warm_start_std={value!r} is invalid; expected a number > 0 (or unset: init_std)")
    return None if value is None else float(value)


def load_proposer(cfg: DictConfig, world: LatentWorld, device: str):
    """The run's goal policy (`paths.policy`) reading `world`'s observations, with the run's position and
    latent readouts where the policy was trained on them."""
    from agent.amortized import PolicyProposer
    from bookkeeping.io import sha256_file
    from world_model.goal_policy import load_goal_policy
    from world_model.position_readout import load_position_readout
    from world_model.predictor import WEIGHTS_FILE

    predictor_sha256 = sha256_file(Path(cfg.paths.predictor) / WEIGHTS_FILE)
    policy, _ = load_goal_policy(cfg.paths.policy, device, predictor_sha256)
    readout = latent_readout = None
    if policy.config.readout_dim:
        readout = load_position_readout(cfg.paths.predictor, device, world.encoder.fingerprint)
    if policy.config.object_dim:
        from world_model.latent_readout import load_latent_readout

        latent_readout = load_latent_readout(cfg.paths.predictor, device)
    goal_from_nearest_frames = readout is not None and cfg.evaluate.energy.goal_positions == "nearest_frames"
    return PolicyProposer(policy, readout, latent_readout, world, goal_from_nearest_frames)


def load_agent(run_dir: str | Path, kind: str = "latent", task=None, **overrides) -> Agent:
    """The agent of a pipeline run directory; `overrides` replace config sections, e.g.
    `load_agent(DIR, planner={"samples": 100}, evaluate={"energy": {"aggregate": "min"}})`. Where the run's
    `evaluate.joint_hold.agents` names `kind`, it is a `JointHold` whose `inner` is the planning (or policy) agent."""
    import envs

    cfg = load_run_config(run_dir, **overrides)
    own_task = task is None
    task = task or envs.make_from_config(cfg.env)
    try:
        agent = build_agent(cfg, task, kind)
    except BaseException:
        if own_task:
            task.close()
        raise
    if own_task and kind != "oracle":  # only the oracle's world steps the task; the others read its spec
        task.close()
    return agent
