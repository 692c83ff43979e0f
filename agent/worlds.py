"""The models an MPC agent plans with, behind one small interface.

A world keeps the context the agent has observed and turns a goal into the planner's energy:

    world.set_goal(goal_images (B, H, W, 3), goal_states (B, S))
    world.observe(pixels (B, H, W, 3), states (B, S), executed_block (B, block*A) | None)
    world.energy_fn(blocks=None)(actions (B, K, H, block*A)) -> energies (B, K)   # K candidates
    world.state_dim                  # S it reads (the agent checks states against it), None: any
    world.check_frames(images)       # refuses frames the world cannot read (another size than the run's)

`blocks` (1..H) scores only the first `blocks` planned blocks (the window ends at a deadline that is
closer than H blocks away; later blocks are not even predicted); None scores all H.

`LatentWorld` is the JEPA world model: frozen encoder + action-conditioned predictor, energy =
distance between predicted and goal latents (plus, with `position_weight`, the squared distance
between the predicted qpos and the goal's qpos read from the goal image by
`world_model.position_readout`). `SimulatorWorld` (agent/simulator_world.py) is the oracle: a copy of the true
MuJoCo simulator set to the current state, energy = the task's true distance to the goal state.

`aggregate` says which planned blocks the energy looks at: `last` (the end of the window), `sum`
(every block) or `min` (the best block: avoids the sliding-deadline trap of docs/protocol.md when
replanning more often than the window is long).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from world_model.compiled_rollout import compile_method
from world_model.device import bf16_autocast
from world_model.energy import latent_distance

AGGREGATES = ("last", "sum", "min")


class World(Protocol):
    """What an MPC agent plans with (module docstring): `LatentWorld`, `agent.simulator_world.SimulatorWorld`."""

    state_dim: int | None

    def check_frames(self, images: np.ndarray) -> None: ...

    def set_goal(self, goal_images: np.ndarray, goal_states: np.ndarray | None = None) -> None: ...

    def observe(self, pixels: np.ndarray, states: np.ndarray | None = None,
                executed_block: np.ndarray | None = None) -> None: ...

    def energy_fn(self, blocks: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]: ...


def aggregate_over_blocks(distances: torch.Tensor, aggregate: str) -> torch.Tensor:
    """distances (..., H) per planned block -> (...)."""
    if aggregate == "last":
        return distances[..., -1]
    if aggregate == "sum":
        return distances.sum(-1)
    if aggregate == "min":
        return distances.min(-1).values
    raise ValueError(f"energy aggregate={aggregate!r} is invalid; expected one of {list(AGGREGATES)}")


def repeat_last_env(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """(B, ...) -> (count, ...), the last env repeated: padding that keeps every predictor call one shape."""
    missing = count - tensor.shape[0]
    return tensor if missing <= 0 else torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])])


class LatentWorld:
    """Plans in the encoder's latent space with the trained predictor."""

    def __init__(self, encoder, predictor, norm: str = "l2", aggregate: str = "last",
                 autocast_bf16: bool = False, chunk_size: int = 4096, compile: bool = False,
                 position_readout=None, position_weight: float = 0.0, proprio_indices=None,
                 state_size: int | None = None, latent_readout=None, latent_readout_weight: float = 0.0,
                 image_size: int | None = None, reference=None, latent_weight: float = 1.0,
                 reach_chain=None, reach_weight: float = 0.0, reach_gate: float = 0.0,
                 hold_radius: float = 0.0, hold_velocity_weight: float = 0.0, hold_action_weight: float = 0.0,
                 hold_position_weight: float | None = None, goal_position_reader=None):
        """`proprio_indices`: the entries of a state (qpos, qvel) of `state_size` values that make the proprio
        the predictor reads (the task's `proprio_indices` and nq + nv); None: the whole state is the proprio.
        `image_size`: the side of the frames the run was trained on; frames of another size are refused.
        `reference` (world_model.familiarity): frames farther from every training frame than held-out
        frames are warned about once per episode (another camera, shadows on: the agent drops below random).
        `latent_weight` scales the latent distance (0: the readout terms alone decide).
        `latent_readout_weight` > 0 adds that weight x the squared distance, in units of the training std,
        between the positions `latent_readout` reads from the predicted latents and from the goal's latent.
        `reach_weight` > 0 adds that weight x the squared distance, in the same units, between the gripper where
        `reach_chain` (agent.kinematics.SerialChain) puts it for the predicted joint angles and the object where
        the latent readout reads it, in envs whose object the readout sees farther than `reach_gate` from the
        goal's: a plan that moves an object first brings the gripper to it (the cube: docs/experiments.md 20).
        `hold_radius` > 0: an env whose observed joints all lie within it of the goal's read-out ones (task units) is
        holding: its plans are scored by the mean over their blocks (reaching early and staying scores best) plus
        `hold_velocity_weight` x the predicted joint velocities squared, in training stds (stopping there), plus
        `hold_action_weight` x the actions squared (still, not twitching: the reacher's arm coasts to rest); and the
        position term weighs `hold_position_weight` there (None: `position_weight`; 0: the latent distance alone;
        docs/experiments.md section 26 compares them).
        `goal_position_reader` (world_model.nearest_frames), where given, reads the goal's positions for the position
        term in place of the position readout."""
        aggregate_over_blocks(torch.zeros(1, 1), aggregate)  # validate early
        latent_distance(torch.zeros(1, 1), torch.zeros(1, 1), norm)
        if position_weight < 0:
            raise ValueError(f"evaluate.energy.position_weight={position_weight} is invalid; expected >= 0")
        if position_weight and (position_readout is None or not predictor.config.proprio_dim):
            raise ValueError(f"evaluate.energy.position_weight={position_weight} needs a predictor that predicts the "
                             "proprio (predictor.use_proprio=true) and its position readout "
                             "(predictor.readout.steps > 0)")
        if position_weight and position_readout.config.qpos_indices is not None:
            raise ValueError(f"evaluate.energy.position_weight={position_weight} needs a position readout of the "
                             f"proprio's positions; this one reads qpos {list(position_readout.config.qpos_indices)} "
                             "(predictor.readout.qpos_indices=null)")
        if latent_readout_weight < 0 or (latent_readout_weight and latent_readout is None):
            raise ValueError(f"evaluate.energy.latent_readout_weight={latent_readout_weight} is invalid; expected 0, "
                             "or > 0 with a latent readout (predictor.latent_readout.steps > 0)")
        self.latent_readout, self.latent_readout_weight = latent_readout, float(latent_readout_weight)
        if latent_weight < 0 or (latent_weight == 0 and not (position_weight or latent_readout_weight)):
            raise ValueError(f"evaluate.energy.latent_weight={latent_weight} is invalid; expected > 0, or 0 with a "
                             "readout term (position_weight or latent_readout_weight > 0)")
        self.latent_weight = float(latent_weight)
        if reach_weight < 0 or (reach_weight and (reach_chain is None or not latent_readout_weight)):
            raise ValueError(f"evaluate.energy.reach_weight={reach_weight} is invalid; expected 0, or > 0 with a "
                             "latent readout term (latent_readout_weight > 0) on a task with an effector (the cube)")
        if reach_weight and len(latent_readout.config.qpos_indices) != 3:
            raise ValueError(f"evaluate.energy.reach_weight={reach_weight} needs a latent readout of an object's "
                             f"x, y, z; this one reads qpos {list(latent_readout.config.qpos_indices)}")
        self.reach_chain, self.reach_weight, self.reach_gate = reach_chain, float(reach_weight), float(reach_gate)
        if (min(hold_radius, hold_velocity_weight, hold_action_weight) < 0 or (hold_radius and not position_weight)
                or ((hold_velocity_weight or hold_action_weight) and not hold_radius)):
            raise ValueError(f"evaluate.energy.hold_radius={hold_radius}, hold_velocity_weight={hold_velocity_weight}, "
                             f"hold_action_weight={hold_action_weight} are invalid; expected >= 0, the weights only "
                             "with a hold radius, and a hold radius only with the position readout term "
                             "(position_weight > 0)")
        if hold_velocity_weight and predictor.config.proprio_dim <= position_readout.config.positions:
            raise ValueError(f"evaluate.energy.hold_velocity_weight={hold_velocity_weight} needs a predictor whose "
                             "proprio holds the joint velocities after the positions; this one predicts positions only")
        self.hold_radius, self.hold_velocity_weight = float(hold_radius), float(hold_velocity_weight)
        self.hold_action_weight = float(hold_action_weight)
        if hold_position_weight is not None and (hold_position_weight < 0 or not hold_radius):
            raise ValueError(f"evaluate.energy.hold_position_weight={hold_position_weight} is invalid; "
                             "expected null, or >= 0 with a hold radius (hold_radius > 0)")
        self.hold_position_weight = float(position_weight if hold_position_weight is None else hold_position_weight)
        self.image_size = image_size
        self.reference, self.warned = reference, False
        self.encoder, self.predictor = encoder, predictor
        self.position_readout, self.position_weight = position_readout, float(position_weight)
        self.goal_position_reader = position_readout if goal_position_reader is None else goal_position_reader
        self.goal_positions: torch.Tensor | None = None  # (B, nq) read from the goal images, in the task's units
        self.compiled = bool(compile)
        if compile:
            compile_method(self, "chunk_terms")
        self.norm, self.aggregate = norm, aggregate
        self.autocast_bf16, self.chunk_size = autocast_bf16, chunk_size
        self.device = next(predictor.parameters()).device
        self.context_frames = predictor.config.context_frames
        self.goal_latents: torch.Tensor | None = None
        self.goal_tokens: torch.Tensor | None = None   # (B, N_enc, D) the goal images' encoder tokens
        self.frame_tokens: torch.Tensor | None = None  # (B, N_enc, D) the last frames embedded (the policy reads them)
        self.context_latents: list[torch.Tensor] = []
        self.context_actions: list[torch.Tensor] = []
        self.context_proprio: list[torch.Tensor] = []  # only for predictors that read the proprio
        proprio_dim = predictor.config.proprio_dim
        self.proprio_indices = list(range(proprio_dim) if proprio_indices is None else proprio_indices)
        if proprio_dim and len(self.proprio_indices) != proprio_dim:
            raise ValueError(f"the predictor reads a proprio of {proprio_dim} values; the task's proprio_indices "
                             f"name {len(self.proprio_indices)}")
        self.state_size = state_size or proprio_dim
        if self.reach_weight:  # the chain's joints among the proprio's entries
            missing = [address for address in reach_chain.qpos_addresses if address not in self.proprio_indices]
            if missing:
                raise ValueError(f"the effector's joints at qpos {missing} are not in the proprio; "
                                 "expected a predictor that predicts the arm's joints (predictor.use_proprio=true)")
            self.reach_columns = [self.proprio_indices.index(address) for address in reach_chain.qpos_addresses]

    @property
    def state_dim(self) -> int | None:
        """S of the states it reads (those the proprio is taken from), or None when it reads none."""
        return self.state_size if self.predictor.config.proprio_dim else None

    def check_frames(self, images: np.ndarray) -> None:
        """Frames of another size than the run's would be resized by the encoder and silently misread."""
        size = tuple(np.shape(images)[1:3])
        if self.image_size is not None and size != (self.image_size, self.image_size):
            raise ValueError(f"frames of {size[0]} x {size[1]} px are invalid for this run; expected "
                             f"{self.image_size} x {self.image_size} (env.image_size={self.image_size})")

    def encode(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> encoder tokens (B, N_enc, D); the world's context stays as it is."""
        self.check_frames(images)
        return self.encoder.encode_images(images).to(self.device)

    def embed(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> prepared predictor latents (B, N, D')."""
        self.frame_tokens = self.encode(images)  # (B, N_enc, D)
        return self.predictor.prepare_latents(self.frame_tokens)

    def set_goal(self, goal_images: np.ndarray, goal_states: np.ndarray | None = None) -> None:
        """Only the goal images are used: the goal's qpos, where needed, is read from them."""
        self.check_frames(goal_images)
        self.goal_tokens = tokens = self.encoder.encode_images(goal_images).to(self.device)  # (B, N_enc, D)
        self.goal_latents = self.predictor.prepare_latents(tokens)  # (B, N, D')
        if self.position_weight:
            self.goal_positions = self.goal_position_reader(tokens.float())  # (B, nq) in the task's units
        self.context_latents, self.context_actions, self.context_proprio = [], [], []
        self.warned = False  # once per episode

    def observe(self, pixels: np.ndarray, states=None, executed_block: np.ndarray | None = None) -> None:
        if executed_block is not None and self.context_latents:
            self.context_actions.append(torch.as_tensor(executed_block, dtype=torch.float32, device=self.device))
        latents = self.embed(pixels)  # (B, N, D')
        self.context_latents.append(latents)
        self.warn_if_unfamiliar(latents)
        self.context_latents = self.context_latents[-self.context_frames :]
        if self.predictor.config.proprio_dim:  # the proprio, as the task observes it
            proprio = np.asarray(states, dtype=np.float32)[:, self.proprio_indices]  # (B, P), a copy
            proprio = torch.tensor(proprio, device=self.device)
            self.context_proprio.append(self.predictor.prepare_proprio(proprio))
            self.context_proprio = self.context_proprio[-self.context_frames :]
        # the blocks executed between the kept frames: one fewer than the frames
        self.context_actions = self.context_actions[len(self.context_actions) - (len(self.context_latents) - 1) :]

    def warn_if_unfamiliar(self, latents: torch.Tensor) -> None:
        if self.reference is None or self.warned:
            return
        unfamiliar = self.reference.unfamiliar(latents.float())  # (B,)
        if unfamiliar.any():
            self.warned = True
            warnings.warn(f"{int(unfamiliar.sum())} of {len(unfamiliar)} frames lie farther from every training frame "
                          "than held-out frames do: are they rendered as the run's were (camera, image size, shadows)?",
                          RuntimeWarning, stacklevel=3)

    def _autocast(self):
        return bf16_autocast(self.device, self.autocast_bf16)

    def position_distance(self, predicted_proprio: torch.Tensor, goal_positions: torch.Tensor) -> torch.Tensor:
        """Mean squared joint error (chunk, H) between predicted proprio (chunk, H, P), standardised, and the
        goal's read-out qpos (chunk, 1, nq), in units of the training set's qpos std (angles wrapped)."""
        count = goal_positions.shape[-1]
        mean, std = self.predictor.proprio_mean[:count], self.predictor.proprio_std[:count]
        positions = predicted_proprio[..., :count].float() * std + mean  # (chunk, H, nq) in the task's units
        return (self.position_readout.position_error(positions, goal_positions) / std).square().mean(-1)

    def reaching(self, latents: torch.Tensor, goal_latents: torch.Tensor) -> torch.Tensor:
        """Whether the object that the latent readout reads from the last frames (B, N, D') lies farther than the
        reach gate from the goal's (B, N, D'): (B,) bool."""
        with self._autocast():
            offsets = self.latent_readout(latents.float()) - self.latent_readout(goal_latents.float())  # (B, 3)
        return offsets.float().norm(dim=-1) > self.reach_gate

    def reach_distance(self, predicted_proprio: torch.Tensor, predicted_latents: torch.Tensor) -> torch.Tensor:
        """Mean squared distance (chunk, H), in the latent readout's training stds, between the effector at the
        predicted joint angles (proprio (chunk, H, P), standardised) and the object read from the predicted
        latents (chunk, H, N, D')."""
        proprio = predicted_proprio.float() * self.predictor.proprio_std + self.predictor.proprio_mean  # (chunk, H, P)
        effector = self.reach_chain(proprio[..., self.reach_columns])  # (chunk, H, 3)
        readout = self.latent_readout
        objects = readout(predicted_latents).float()  # (chunk, H, 3), task units
        return ((effector - objects) / readout.std).square().mean(-1)

    def holding(self, context_proprio: torch.Tensor | None) -> torch.Tensor | None:
        """Whether each env's last observed joints (proprio (B, C, P), standardised) all lie within the hold radius of
        the goal's read-out ones: (B,) bool, or None when holding is off."""
        if not self.hold_radius:
            return None
        count = self.goal_positions.shape[-1]
        mean, std = self.predictor.proprio_mean[:count], self.predictor.proprio_std[:count]
        positions = context_proprio[:, -1, :count].float() * std + mean  # (B, nq) in the task's units
        return self.position_readout.position_error(positions, self.goal_positions).abs().amax(-1) <= self.hold_radius

    def chunk_terms(self, actions: torch.Tensor, context: torch.Tensor, context_actions: torch.Tensor | None,
                    context_proprio: torch.Tensor | None, goal: torch.Tensor, goal_positions: torch.Tensor | None,
                    reaching: torch.Tensor | None, velocities: bool):
        """One predictor call's energy terms per planned block, for E envs of K candidates each: actions
        (E*K, H, block*A), context (E, C, N, D'), context_actions (E, C-1, block*A) | None, context_proprio
        (E, C, P) | None, goal (E, N, D'), goal_positions (E, nq) | None, reaching (E,) bool | None ->
        (distance, the position term | None, the predicted velocities squared | None [with `velocities`]), each
        (E*K, H). Under `compile` this whole method is one graph (the rollout and the terms on it)."""
        samples = actions.shape[0] // context.shape[0]
        with self._autocast():  # an env's context runs once for its K candidates
            predicted, predicted_proprio = self.predictor.rollout(
                context, actions, context_actions, context_proprio, return_proprio=True)  # (E*K, H, N, D'), (E*K, H, P)
        flat_goal = goal.repeat_interleave(samples, dim=0)[:, None]  # (E*K, 1, N, D')
        distance = self.latent_weight * latent_distance(predicted.float(), flat_goal, self.norm)  # (E*K, H)
        position = None
        if self.position_weight:
            goal_joints = goal_positions.repeat_interleave(samples, dim=0)[:, None]  # (E*K, 1, nq)
            position = self.position_distance(predicted_proprio, goal_joints)
            distance = distance + self.position_weight * position
        if self.latent_readout_weight:
            readout = self.latent_readout
            predicted_objects = readout.standardised(predicted)  # (E*K, H, positions), in training stds
            goal_objects = readout.standardised(flat_goal)  # (E*K, 1, positions)
            object_distance = (predicted_objects - goal_objects).square().mean(-1)  # (E*K, H)
            distance = distance + self.latent_readout_weight * object_distance
        if self.reach_weight:
            active = reaching.repeat_interleave(samples)[:, None]  # (E*K, 1)
            distance = distance + self.reach_weight * active * self.reach_distance(predicted_proprio, predicted)
        velocity = None
        if velocities:  # the proprio's entries after the positions
            velocity = predicted_proprio[..., goal_positions.shape[-1] :].float().square().mean(-1)  # (E*K, H)
        return distance, position, velocity

    @torch.no_grad()
    def energy_fn(self, blocks: int | None = None):
        context = torch.stack(self.context_latents, dim=1)  # (B, C, N, D')
        context_actions = torch.stack(self.context_actions, dim=1) if self.context_actions else None  # (B, C-1, bA)
        context_proprio = torch.stack(self.context_proprio, dim=1) if self.context_proprio else None  # (B, C, P)
        goal, goal_positions = self.goal_latents, self.goal_positions  # (B, N, D'), (B, nq) | None
        reaching = self.reaching(context[:, -1], goal) if self.reach_weight else None  # (B,) bool
        holding = self.holding(context_proprio)  # (B,) bool | None

        @torch.no_grad()
        def energy(actions: torch.Tensor) -> torch.Tensor:
            actions = actions[:, :, :blocks]  # (B, K, H', block*A)
            batch, samples, horizon, block_dim = actions.shape
            calls = -(-batch // max(1, self.chunk_size // samples))  # predictor calls of whole envs, <= chunk_size rows
            chunk_envs = -(-batch // calls)  # as even as can be: 16 envs of 300 samples are 2 x 8, not 13 + 3
            padded = batch
            if self.compiled:  # every call one shape: torch.compile stops recompiling after 8
                padded = calls * chunk_envs
            env_inputs = [None if tensor is None else repeat_last_env(tensor, padded) for tensor in (
                context, context_actions, context_proprio, goal, goal_positions, reaching)]  # (padded, ...) | None
            flat_actions = repeat_last_env(actions, padded).to(self.device)
            flat_actions = flat_actions.reshape(padded * samples, horizon, block_dim)  # (padded*K, H', block*A)
            terms = []  # per call: (distance, position | None, velocity | None), each (chunk*K, H')
            for start in range(0, padded, chunk_envs):
                envs = slice(start, start + chunk_envs)
                rows = slice(start * samples, (start + chunk_envs) * samples)
                terms.append(self.chunk_terms(flat_actions[rows], *(None if tensor is None else tensor[envs]
                                                                    for tensor in env_inputs), holding is not None))
            distances, positions, velocities = ([call[index] for call in terms] for index in range(3))

            def per_env(values: list[torch.Tensor]) -> torch.Tensor:
                return torch.cat(values).view(padded, samples, horizon)[:batch]  # (B, K, H')

            per_block = per_env(distances)  # (B, K, H')
            energies = aggregate_over_blocks(per_block, self.aggregate)  # (B, K)
            if holding is None or not holding.any():
                return energies
            effort = actions.to(per_block).square().mean(-1)  # (B, K, H')
            per_block = per_block + (self.hold_position_weight - self.position_weight) * per_env(positions)
            held = per_block + self.hold_velocity_weight * per_env(velocities) + self.hold_action_weight * effort
            held = held.mean(-1)  # (B, K)
            return torch.where(holding[:, None], held, energies)

        return energy
