"""Improved CEM (iCEM, Pinneri et al., CoRL 2020): CEM that reaches its plans with far fewer rollouts.

Three changes to CEM (planners/cem.py), each a setting:
- colored noise: candidates deviate from the mean by Gaussian noise whose power spectrum along time falls
  as 1 / f^noise_beta (0: white noise, CEM's; 2: smooth, low-frequency action sequences). Time runs over
  the H blocks x `steps_per_block` task steps of a plan: a block's D = steps_per_block * A dims are
  its steps' actions, step-major, as the agent executes them;
- elite reuse: the best `keep_fraction` of each iteration's top_k elites join the next iteration's
  candidates with the energy they already have (one plan call scores with one energy), so they cost no
  rollout and the best plan found is never lost from the population;
- momentum: mean and std move only (1 - momentum) of the way to the elites' mean and std.
Every iteration scores `samples` new candidates (a constant, so a compiled predictor sees one shape);
candidate 0 is the mean itself, as in every planner here (planners/base.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from planners.base import EnergyFn, PlanResult
from planners.cem import CEMPlanner


def colored_noise(leading: tuple[int, ...], steps: int, beta: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise (*leading, steps), unit variance at every step, power spectrum ~ 1 / f^beta along steps.

    Drawn in the frequency domain (the lowest frequency 1 / steps also scales the constant term), each
    frequency's amplitude scaled by f^(-beta / 2), then normalised by the exact standard deviation.
    """
    frequencies = torch.fft.rfftfreq(steps, device=generator.device)  # (F,)
    frequencies[0] = 1.0 / steps
    scale = frequencies ** (-beta / 2)  # (F,)
    real = torch.randn((*leading, len(scale)), generator=generator, device=generator.device) * scale
    imaginary = torch.randn((*leading, len(scale)), generator=generator, device=generator.device) * scale
    real_only = [0] + ([len(scale) - 1] if steps % 2 == 0 else [])  # the constant and the Nyquist term
    power = 4 * scale.square()  # (F,) variance each frequency adds to a step, times steps^2
    for index in real_only:
        imaginary[..., index] = 0.0
        real[..., index] *= 2**0.5
        power[index] = 2 * scale[index].square()
    noise = torch.fft.irfft(torch.complex(real, imaginary), n=steps)  # (*leading, steps)
    return noise * steps / power.sum().sqrt()


class ICEMPlanner(CEMPlanner):
    """iCEM over (B, H, D) action sequences (module docstring). Every setting of `CEMPlanner` applies
    (action_dim, top_k, samples, horizon, iterations, init_std, min_std, low, high, seed, device), and:

    noise_beta: >= 0, the colored noise's exponent (0: white noise, the default: colored noise planned worse
        on the reacher, docs/experiments.md section 17).
    keep_fraction: in [0, 1], the share of top_k elites carried into the next iteration.
    momentum: in [0, 1), the weight of the old mean and std in each refit.
    steps_per_block: >= 1, task steps per block (D must be a multiple of it): the noise's time resolution.
    """

    def __init__(self, action_dim: int, noise_beta: float = 0.0, keep_fraction: float = 0.3,
                 momentum: float = 0.1, steps_per_block: int = 1, **settings) -> None:
        super().__init__(action_dim, **settings)
        if not noise_beta >= 0:
            raise ValueError(f"noise_beta={noise_beta}: expected a float >= 0")
        if not 0 <= keep_fraction <= 1:
            raise ValueError(f"keep_fraction={keep_fraction}: expected a float in [0, 1]")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum={momentum}: expected a float in [0, 1)")
        if steps_per_block < 1 or action_dim % steps_per_block:
            raise ValueError(f"steps_per_block={steps_per_block}: expected an integer >= 1 that divides the "
                             f"action dims of a block ({action_dim})")
        self.noise_beta, self.keep_fraction, self.momentum = noise_beta, keep_fraction, momentum
        self.steps_per_block = steps_per_block
        self.kept_elites = round(keep_fraction * self.top_k)

    def plan(
        self,
        energy_fn: EnergyFn,
        init_mean: torch.Tensor | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        batch_size: int = 1,
        init_std: float | None = None,
    ) -> PlanResult:
        """Minimise energy_fn over (B, H, D) action sequences inside [low, high].

        Arguments as `SamplingPlanner.plan`."""
        mean = self._initial_mean(init_mean, batch_size)  # (B, H, D)
        batch = mean.shape[0]
        generators = self._generators(generator, batch)
        std = torch.full_like(mean, self.init_std if init_std is None else init_std)  # (B, H, D)
        best_actions, best_energy = mean.clone(), torch.full((batch,), float("inf"), device=mean.device)
        kept = mean.new_empty(batch, 0, self.horizon, self.action_dim)  # (B, kept, H, D) last iteration's elites
        kept_energy = mean.new_empty(batch, 0)  # (B, kept)
        env_index = torch.arange(batch, device=mean.device)
        best_history, elite_history = [], []
        for _ in range(self.iterations):
            fresh = self._sample(mean, std, generators)  # (B, S, H, D)
            candidates = torch.cat([fresh, kept], dim=1)  # (B, S + kept, H, D)
            energies = torch.cat([self._score(energy_fn, fresh), kept_energy], dim=1)  # (B, S + kept)
            elite_energy, elite_index = energies.topk(self.top_k, dim=1, largest=False)  # (B, k) ascending
            improved = elite_energy[:, 0] < best_energy  # (B,)
            best_energy = torch.where(improved, elite_energy[:, 0], best_energy)
            best_actions = torch.where(improved[:, None, None], candidates[env_index, elite_index[:, 0]], best_actions)
            elites = candidates[env_index[:, None], elite_index]  # (B, k, H, D)
            mean = self.momentum * mean + (1 - self.momentum) * elites.mean(dim=1)
            std = self.momentum * std + (1 - self.momentum) * elites.std(dim=1, unbiased=False)
            std = std.clamp(min=self.min_std)
            kept, kept_energy = elites[:, : self.kept_elites], elite_energy[:, : self.kept_elites]
            best_history.append(elite_energy[:, 0])
            elite_history.append(elite_energy.mean(dim=1))
        return PlanResult(
            actions=best_actions,
            energy=best_energy,
            best_energy_history=torch.stack(best_history).cpu(),  # (iterations, B)
            elite_energy_history=torch.stack(elite_history).cpu(),  # (iterations, B)
        )

    def _sample(
        self, mean: torch.Tensor, std: torch.Tensor, generators: list[torch.Generator]
    ) -> torch.Tensor:
        """(B, H, D) mean and std -> (B, S, H, D) clamped candidates with colored noise; candidate 0 is the mean."""
        channels, steps = self.action_dim // self.steps_per_block, self.horizon * self.steps_per_block
        noise = torch.stack([
            colored_noise((self.samples, channels), steps, self.noise_beta, g).to(mean.device) for g in generators
        ])  # (B, S, A, H * steps_per_block), env b from generators[b] only
        noise = noise.transpose(-1, -2).reshape(len(generators), self.samples, self.horizon, self.action_dim)
        noise[:, 0] = 0.0
        return (mean[:, None] + std[:, None] * noise).clamp(self.low, self.high)  # (B, S, H, D)
