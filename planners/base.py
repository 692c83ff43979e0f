"""Shared machinery of the sampling planners: bounds, seeded sampling, warm start, the iteration loop.

A planner minimises an energy over bounded action sequences, for B envs at once:

    energy_fn(actions (B, S, H, D)) -> energies (B, S)

where S is the number of candidates, H the horizon in action blocks and D = block * A the action dims
of one block, flattened. Each iteration draws S candidates per env from a diagonal Gaussian
(mean, std) of shape (B, H, D), clamps them to [low, high], scores all B x S of them in ONE
energy_fn call and refits (mean, std) as a weighted mean / std of the candidates. Subclasses only
say how candidates are weighted (`candidate_weights`): CEM puts equal weight on the top-k, MPPI a
softmax of -energy / (temperature x the spread of the candidates' energies).

Guarantees:
- candidate 0 of every iteration is the current mean itself, so the warm start (iteration 0) is always
  scored, and the returned plan is the best candidate over all iterations: never worse than it;
- non-finite energies (nan, +-inf) count as +inf: they rank last and get zero weight;
- env b draws noise only from its own generator, so its plan does not depend on B or on the other envs.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

EnergyFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PlanResult:
    """Outcome of one `SamplingPlanner.plan` call.

    actions: (B, H, D) best plan found per env, inside the bounds.
    energy: (B,) its energy (+inf when no candidate of that env ever scored a finite energy).
    best_energy_history: (iterations, B) lowest energy among each iteration's candidates.
    elite_energy_history: (iterations, B) weighted mean energy of each iteration's elites (the
        candidates the update weighted: CEM top-k, MPPI softmax weights).
    """

    actions: torch.Tensor
    energy: torch.Tensor
    best_energy_history: torch.Tensor
    elite_energy_history: torch.Tensor


def shift_plan(actions: torch.Tensor, executed_blocks: int) -> torch.Tensor:
    """Warm start for the next MPC step: drop the first `executed_blocks` blocks, repeat the last.

    actions: (B, H, D) -> (B, H, D). The tail is padded by repeating the plan's last block (holding
    the final action is a better guess than zeros for goal reaching). executed_blocks must lie in
    [0, H]; executed_blocks == H gives the last block repeated H times.
    """
    horizon = actions.shape[1]
    if not 0 <= executed_blocks <= horizon:
        raise ValueError(f"executed_blocks={executed_blocks}: expected an integer in [0, {horizon}]")
    kept = actions[:, executed_blocks:]  # (B, H - k, D)
    padding = actions[:, -1:].expand(-1, executed_blocks, -1)  # (B, k, D)
    return torch.cat([kept, padding], dim=1)  # (B, H, D)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@runtime_checkable
class Planner(Protocol):
    """What an agent plans with (agent/mpc.py): a `SamplingPlanner` (CEM, MPPI, iCEM), or any other."""

    horizon: int  # H, in action blocks
    seed: int

    def make_generators(self, batch_size: int, seed: int | None = None) -> list[torch.Generator]: ...

    def plan(self, energy_fn: EnergyFn, init_mean: torch.Tensor | None = None,
             generator: torch.Generator | Sequence[torch.Generator] | None = None, batch_size: int = 1,
             init_std: float | None = None) -> PlanResult: ...


class SamplingPlanner(abc.ABC):
    """Base of CEM and MPPI: validation, sampling, best-so-far tracking. See the module docstring."""

    def __init__(
        self,
        action_dim: int,
        horizon: int = 5,
        samples: int = 300,
        iterations: int = 30,
        init_std: float = 1.0,
        min_std: float = 0.05,
        low: float = -1.0,
        high: float = 1.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        _require(action_dim >= 1, f"action_dim={action_dim}: expected an integer >= 1")
        _require(horizon >= 1, f"horizon={horizon}: expected an integer >= 1 (action blocks)")
        _require(samples >= 1, f"samples={samples}: expected an integer >= 1")
        _require(iterations >= 1, f"iterations={iterations}: expected an integer >= 1")
        _require(init_std > 0, f"init_std={init_std}: expected a float > 0")
        _require(0 <= min_std <= init_std, f"min_std={min_std}: expected a float in [0, init_std={init_std}]")
        _require(low < high, f"low={low}, high={high}: expected low < high")
        self.action_dim = action_dim
        self.horizon = horizon
        self.samples = samples
        self.iterations = iterations
        self.init_std = init_std
        self.min_std = min_std
        self.low = low
        self.high = high
        self.seed = seed
        self.device = torch.device(device)

    @abc.abstractmethod
    def candidate_weights(self, energies: torch.Tensor) -> torch.Tensor:
        """energies (B, S), non-finite already replaced by +inf -> weights (B, S), >= 0, rows sum to 1."""

    def make_generators(self, batch_size: int, seed: int | None = None) -> list[torch.Generator]:
        """One generator per env, env b seeded `seed + b` (default seed: the planner's `seed`).

        Keep the list and pass it to every `plan` call of an episode so that each replanning draws
        fresh noise while each env stays reproducible on its own.
        """
        base_seed = self.seed if seed is None else seed
        return [torch.Generator(self.device).manual_seed(base_seed + env) for env in range(batch_size)]

    def plan(
        self,
        energy_fn: EnergyFn,
        init_mean: torch.Tensor | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        batch_size: int = 1,
        init_std: float | None = None,
    ) -> PlanResult:
        """Minimise energy_fn over (B, H, D) action sequences inside [low, high].

        init_mean: (B, H, D) warm start (clamped to the bounds), or None for the bounds' midpoint with
            B = batch_size.
        generator: one generator per env (a sequence of B), or a single one when B == 1, or None for
            fresh generators seeded seed + b (`make_generators`): the same call gives the same plan.
        init_std: the first iteration's sampling std, e.g. narrower around a trusted warm start; None: the
            planner's `init_std`.
        """
        mean = self._initial_mean(init_mean, batch_size)  # (B, H, D)
        batch = mean.shape[0]
        generators = self._generators(generator, batch)
        std = torch.full_like(mean, self.init_std if init_std is None else init_std)  # (B, H, D)
        best_actions, best_energy = mean.clone(), torch.full((batch,), float("inf"), device=mean.device)
        best_history, elite_history = [], []
        for _ in range(self.iterations):
            candidates = self._sample(mean, std, generators)  # (B, S, H, D)
            energies = self._score(energy_fn, candidates)  # (B, S)
            iteration_best, best_index = energies.min(dim=1)  # (B,), (B,)
            improved = iteration_best < best_energy  # (B,)
            best_energy = torch.where(improved, iteration_best, best_energy)
            env_index = torch.arange(batch, device=mean.device)
            iteration_best_actions = candidates[env_index, best_index]  # (B, H, D)
            best_actions = torch.where(improved[:, None, None], iteration_best_actions, best_actions)
            weights = self.candidate_weights(energies)  # (B, S)
            mean, std = self._refit(candidates, weights)
            weighted_energy = torch.where(weights > 0, weights * energies, torch.zeros_like(energies))
            best_history.append(iteration_best)
            elite_history.append(weighted_energy.sum(dim=1))
        return PlanResult(
            actions=best_actions,
            energy=best_energy,
            best_energy_history=torch.stack(best_history).cpu(),  # (iterations, B)
            elite_energy_history=torch.stack(elite_history).cpu(),  # (iterations, B)
        )

    def _initial_mean(self, init_mean: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        expected = (self.horizon, self.action_dim)
        if init_mean is None:
            midpoint = (self.low + self.high) / 2
            return torch.full((batch_size, *expected), midpoint, device=self.device)
        if init_mean.ndim != 3 or tuple(init_mean.shape[1:]) != expected:
            shape = tuple(init_mean.shape)
            raise ValueError(f"init_mean shape {shape}: expected (B, {expected[0]}, {expected[1]})")
        return init_mean.detach().float().clamp(self.low, self.high)

    def _generators(
        self, generator: torch.Generator | Sequence[torch.Generator] | None, batch: int
    ) -> list[torch.Generator]:
        if generator is None:
            return self.make_generators(batch)
        generators = [generator] if isinstance(generator, torch.Generator) else list(generator)
        if len(generators) != batch:
            raise ValueError(f"{len(generators)} generator(s) for {batch} envs: expected one per env")
        return generators

    def _sample(
        self, mean: torch.Tensor, std: torch.Tensor, generators: list[torch.Generator]
    ) -> torch.Tensor:
        """(B, H, D) mean and std -> (B, S, H, D) clamped candidates; candidate 0 is the mean itself."""
        shape = (self.samples, self.horizon, self.action_dim)
        noise = torch.stack(
            [torch.randn(shape, generator=g, device=g.device).to(mean.device) for g in generators]
        )  # (B, S, H, D), env b from generators[b] only
        noise[:, 0] = 0.0
        return (mean[:, None] + std[:, None] * noise).clamp(self.low, self.high)  # (B, S, H, D)

    def _score(self, energy_fn: EnergyFn, candidates: torch.Tensor) -> torch.Tensor:
        """One energy_fn call on (B, S, H, D) -> (B, S) float32, non-finite replaced by +inf."""
        energies = energy_fn(candidates)
        expected = tuple(candidates.shape[:2])
        if tuple(energies.shape) != expected:
            shape = tuple(energies.shape)
            raise ValueError(f"energy_fn returned shape {shape}: expected (B, S) = {expected}")
        energies = energies.detach().float().to(candidates.device)
        return torch.where(torch.isfinite(energies), energies, torch.full_like(energies, float("inf")))

    def _refit(self, candidates: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted mean and std of (B, S, H, D) candidates under (B, S) weights -> (B, H, D) each."""
        weights = weights[:, :, None, None]  # (B, S, 1, 1)
        mean = (weights * candidates).sum(dim=1)  # (B, H, D)
        variance = (weights * (candidates - mean[:, None]) ** 2).sum(dim=1)  # (B, H, D)
        return mean, variance.sqrt().clamp(min=self.min_std)
