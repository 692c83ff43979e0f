"""iCEM (planners/icem.py): colored noise, elite reuse without rollouts, batching, bounds, its config."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from planners import CEMPlanner, ICEMPlanner, make_planner
from planners.icem import colored_noise

HORIZON, STEPS_PER_BLOCK, ACTIONS = 5, 5, 2
BLOCK_DIM = STEPS_PER_BLOCK * ACTIONS  # D: a block's steps, step-major
ICEM_YAML = Path(__file__).resolve().parents[2] / "configs" / "planner" / "icem.yaml"


def smooth_target() -> torch.Tensor:
    """(H, D): a smooth action sequence over the H * steps_per_block task steps, A = 2 channels."""
    steps = torch.arange(HORIZON * STEPS_PER_BLOCK, dtype=torch.float32)[:, None]  # (T, 1)
    return (0.6 * torch.sin(2 * math.pi * steps / len(steps) + torch.arange(ACTIONS))).reshape(HORIZON, BLOCK_DIM)


def quadratic(target: torch.Tensor):
    """energy_fn: actions (B, S, H, D) -> (B, S), sum of squares to target (H, D) or (B, H, D)."""
    target = target if target.ndim == 3 else target[None]
    return lambda actions: ((actions - target[:, None]) ** 2).sum(dim=(-1, -2))


def icem(**settings) -> ICEMPlanner:
    return ICEMPlanner(BLOCK_DIM, steps_per_block=STEPS_PER_BLOCK, **{"samples": 100, "iterations": 10,
                                                                      "top_k": 10, **settings})


@pytest.mark.parametrize("steps", [24, 25])
def test_colored_noise_has_unit_variance_and_its_exponent_sets_the_smoothness(steps):
    generator = torch.Generator().manual_seed(0)
    lag_one = {}
    for beta in (0.0, 2.0):
        noise = colored_noise((4000,), steps, beta, generator)  # (4000, T)
        assert noise.shape == (4000, steps)
        assert (noise.var(dim=0) - 1).abs().max() < 0.1  # every step, not only on average
        lag_one[beta] = (noise[:, 1:] * noise[:, :-1]).mean().item()
    assert abs(lag_one[0.0]) < 0.05 and lag_one[2.0] > 0.8


def test_colored_noise_beats_cem_on_a_smooth_sequence_at_the_same_budget():
    energy_fn = quadratic(smooth_target())
    for seed in range(3):
        ours = icem(seed=seed, noise_beta=2.0).plan(energy_fn)
        cem = CEMPlanner(BLOCK_DIM, samples=100, iterations=10, top_k=10, seed=seed).plan(energy_fn)
        assert ours.energy.item() < cem.energy.item() / 2
        assert ours.energy.item() < 0.5


def test_kept_elites_cost_no_rollout_and_the_best_energy_never_rises():
    shapes = []
    target_energy = quadratic(smooth_target())

    def energy_fn(actions):
        shapes.append(tuple(actions.shape))
        return target_energy(actions)

    result = icem(keep_fraction=0.5).plan(energy_fn, batch_size=2)
    assert shapes == [(2, 100, HORIZON, BLOCK_DIM)] * 10  # only the new samples are scored
    assert (result.best_energy_history.diff(dim=0) <= 0).all()
    assert torch.equal(result.energy, result.best_energy_history[-1])
    assert (result.elite_energy_history >= result.best_energy_history).all()


def test_a_batch_plans_each_env_as_if_planned_alone_inside_the_bounds():
    targets = torch.rand(3, HORIZON, BLOCK_DIM, generator=torch.Generator().manual_seed(1)) * 3 - 1.5
    batched = icem(seed=7, low=-0.5, high=0.75).plan(quadratic(targets), batch_size=3)
    assert batched.actions.min() >= -0.5 and batched.actions.max() <= 0.75
    for env in range(3):
        alone = icem(seed=7 + env, low=-0.5, high=0.75).plan(quadratic(targets[env]))
        assert torch.equal(batched.actions[env], alone.actions[0])
        assert torch.equal(batched.energy[env], alone.energy[0])


def test_the_config_builds_it_with_the_predictors_block():
    cfg = OmegaConf.create({"planner": OmegaConf.load(ICEM_YAML), "predictor": {"block": STEPS_PER_BLOCK}})
    planner = make_planner(cfg.planner, action_dim=BLOCK_DIM)
    assert type(planner) is ICEMPlanner
    assert (planner.samples, planner.iterations, planner.top_k, planner.steps_per_block) == (100, 10, 10, 5)
    assert (planner.noise_beta, planner.keep_fraction, planner.momentum, planner.kept_elites) == (0.0, 0.3, 0.1, 3)
    assert planner.plan(quadratic(smooth_target()), batch_size=2).actions.shape == (2, HORIZON, BLOCK_DIM)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"noise_beta": -1.0}, r"planner\.noise_beta=-1\.0: expected a float >= 0"),
        ({"keep_fraction": 1.5}, r"planner\.keep_fraction=1\.5: expected a float in \[0, 1\]"),
        ({"momentum": 1.0}, r"planner\.momentum=1\.0: expected a float in \[0, 1\)"),
        ({"steps_per_block": 3}, r"planner\.steps_per_block=3: expected an integer >= 1 that divides .* \(10\)"),
        ({"steps_per_block": 2.5}, r"planner\.steps_per_block=2\.5: expected an integer"),
        ({"top_k": 200}, r"planner\.top_k=200: expected an integer in \[1, samples=100\]"),
        ({"noise_beta": "pink"}, r"planner\.noise_beta='pink': expected a number"),
    ],
)
def test_bad_settings_name_the_key_and_what_was_expected(change, message):
    cfg = OmegaConf.merge(OmegaConf.load(ICEM_YAML), {"steps_per_block": STEPS_PER_BLOCK}, change)
    with pytest.raises(ValueError, match=message):
        make_planner(cfg, action_dim=BLOCK_DIM)
