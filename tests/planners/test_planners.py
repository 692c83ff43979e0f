"""CEM and MPPI on known energies: optimum found, bounds, batching, warm start, non-finite energies."""
from __future__ import annotations

import pytest
import torch

from planners import CEMPlanner, ICEMPlanner, MPPIPlanner, Planner, PlanResult, shift_plan

HORIZON, ACTION_DIM = 5, 4
PLANNERS = [CEMPlanner, MPPIPlanner]


def quadratic(target: torch.Tensor):
    """Energy sum((actions - target)^2) over (H, D); target (H, D) or (B, H, D).

    Returns energy_fn: actions (B, S, H, D) -> (B, S).
    """
    target = target if target.ndim == 3 else target[None]
    return lambda actions: ((actions - target[:, None]) ** 2).sum(dim=(-1, -2))


@pytest.mark.parametrize("planner_class", PLANNERS)
def test_finds_the_minimum_inside_the_bounds(planner_class):
    target = torch.linspace(-0.8, 0.8, HORIZON * ACTION_DIM).reshape(HORIZON, ACTION_DIM)
    result = planner_class(ACTION_DIM).plan(quadratic(target))
    assert isinstance(result, PlanResult)
    assert result.actions.shape == (1, HORIZON, ACTION_DIM)
    assert (result.actions[0] - target).abs().max() < 0.05
    assert result.energy.item() < 0.01
    assert result.best_energy_history.shape == result.elite_energy_history.shape == (30, 1)
    assert torch.equal(result.energy, result.best_energy_history.min(dim=0).values)
    assert result.elite_energy_history[-1, 0] < result.elite_energy_history[0, 0] / 100


@pytest.mark.parametrize("planner_class", PLANNERS)
def test_optimum_outside_the_bounds_puts_the_plan_on_the_bound(planner_class):
    target = torch.linspace(-2.4, 2.4, HORIZON * ACTION_DIM).reshape(HORIZON, ACTION_DIM)
    outside = target.abs() > 1
    actions = planner_class(ACTION_DIM).plan(quadratic(target)).actions[0]
    assert (actions[outside] - target[outside].sign()).abs().max() < 0.01
    assert (actions[~outside] - target[~outside]).abs().max() < 0.15


@pytest.mark.parametrize("planner_class", PLANNERS)
def test_every_candidate_is_inside_custom_bounds_and_scored_in_one_call_per_iteration(planner_class):
    calls = []

    def energy_fn(actions):
        calls.append((tuple(actions.shape), actions.min().item(), actions.max().item()))
        return actions.sum(dim=(-1, -2))

    planner = planner_class(ACTION_DIM, samples=40, iterations=6, init_std=3.0, low=-0.5, high=0.25)
    result = planner.plan(energy_fn, batch_size=2)
    assert [shape for shape, _, _ in calls] == [(2, 40, HORIZON, ACTION_DIM)] * 6
    assert min(low for _, low, _ in calls) >= -0.5 and max(high for _, _, high in calls) <= 0.25
    assert result.actions.min() >= -0.5 and result.actions.max() <= 0.25


@pytest.mark.parametrize("planner_class", PLANNERS)
def test_a_batch_plans_each_env_as_if_planned_alone(planner_class):
    targets = torch.rand(3, HORIZON, ACTION_DIM, generator=torch.Generator().manual_seed(1)) * 2 - 1
    init_mean = torch.rand(3, HORIZON, ACTION_DIM, generator=torch.Generator().manual_seed(2)) * 2 - 1
    settings = dict(samples=64, iterations=5)
    batched = planner_class(ACTION_DIM, seed=7, **settings).plan(quadratic(targets), init_mean)
    for env in range(3):
        alone_planner = planner_class(ACTION_DIM, seed=7 + env, **settings)
        alone = alone_planner.plan(quadratic(targets[env]), init_mean[env : env + 1])
        assert torch.equal(batched.actions[env], alone.actions[0])
        assert torch.equal(batched.energy[env], alone.energy[0])
    generators = planner_class(ACTION_DIM, **settings).make_generators(3, seed=7)
    explicit = planner_class(ACTION_DIM, **settings).plan(quadratic(targets), init_mean, generator=generators)
    assert torch.equal(explicit.actions, batched.actions)


@pytest.mark.parametrize("planner_class", PLANNERS)
def test_plans_are_reproducible_and_depend_on_the_seed(planner_class):
    energy_fn = quadratic(torch.full((HORIZON, ACTION_DIM), 0.3))
    settings = dict(samples=32, iterations=3, init_std=0.3)
    first = planner_class(ACTION_DIM, seed=3, **settings).plan(energy_fn)
    again = planner_class(ACTION_DIM, seed=3, **settings).plan(energy_fn)
    other = planner_class(ACTION_DIM, seed=4, **settings).plan(energy_fn)
    assert torch.equal(first.actions, again.actions)
    assert not torch.equal(first.actions, other.actions)
    single = planner_class(ACTION_DIM, **settings).plan(energy_fn, generator=torch.Generator().manual_seed(3))
    assert torch.equal(single.actions, first.actions)


def test_the_sampling_planners_are_what_an_agent_plans_with():
    for planner_class in (CEMPlanner, MPPIPlanner, ICEMPlanner):
        assert isinstance(planner_class(action_dim=2), Planner), planner_class
    assert not isinstance(object(), Planner)  # no horizon, seed, make_generators nor plan


def test_shift_plan_drops_executed_blocks_and_repeats_the_last():
    actions = torch.arange(2 * HORIZON * 2, dtype=torch.float32).reshape(2, HORIZON, 2)
    shifted = shift_plan(actions, 2)
    assert torch.equal(shifted[:, :3], actions[:, 2:])
    assert torch.equal(shifted[:, 3:], actions[:, -1:].expand(-1, 2, -1))
    assert torch.equal(shift_plan(actions, 0), actions)
    assert torch.equal(shift_plan(actions, HORIZON), actions[:, -1:].expand(-1, HORIZON, -1))
    with pytest.raises(ValueError, match="executed_blocks=6"):
        shift_plan(actions, HORIZON + 1)


@pytest.mark.parametrize("planner_class", PLANNERS)
def test_warm_start_is_a_candidate_and_the_plan_is_never_worse(planner_class):
    init_mean = torch.rand(2, HORIZON, ACTION_DIM, generator=torch.Generator().manual_seed(5)) * 2 - 1
    result = planner_class(ACTION_DIM, samples=32, iterations=4).plan(quadratic(init_mean), init_mean)
    assert torch.equal(result.actions, init_mean)
    assert torch.equal(result.energy, torch.zeros(2))

    def rugged(actions):  # many local minima: the sampling mean wanders, the best plan must not
        return torch.sin(7 * actions).sum(dim=(-1, -2)) + (actions**2).sum(dim=(-1, -2))

    result = planner_class(ACTION_DIM, samples=32, iterations=3).plan(rugged, init_mean)
    assert (result.energy <= rugged(init_mean[:, None])[:, 0]).all()
    assert torch.allclose(result.energy, rugged(result.actions[:, None])[:, 0])


@pytest.mark.parametrize("planner_class", PLANNERS)
def test_non_finite_energies_rank_last(planner_class):
    target = torch.full((HORIZON, ACTION_DIM), 0.5)

    def energy_fn(actions):  # the unconstrained optimum (first action dim 0.5) is poisoned
        energies = quadratic(target)(actions)
        energies[actions[..., 0, 0] > 0] = float("nan")
        energies[actions[..., 0, 1] > 0.9] = float("inf")
        return energies

    result = planner_class(ACTION_DIM, samples=100, iterations=10).plan(energy_fn, batch_size=2)
    assert torch.isfinite(result.energy).all()
    assert (result.actions[:, 0, 0] <= 0).all()
    assert torch.isfinite(result.elite_energy_history).all()

    all_nan = planner_class(ACTION_DIM, samples=32, iterations=2)
    poisoned = all_nan.plan(lambda actions: torch.full(actions.shape[:2], float("nan")))
    assert torch.equal(poisoned.energy, torch.tensor([float("inf")]))
    assert torch.equal(poisoned.actions, torch.zeros(1, HORIZON, ACTION_DIM))


def test_candidate_weights():
    energies = torch.tensor([[3.0, 1.0, float("inf"), 2.0, 0.5]])
    cem = CEMPlanner(1, samples=5, top_k=2).candidate_weights(energies)
    assert torch.equal(cem, torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.5]]))
    sharp = MPPIPlanner(1, temperature=0.1).candidate_weights(energies)
    soft = MPPIPlanner(1, temperature=10.0).candidate_weights(energies)
    for weights in (sharp, soft):
        assert torch.allclose(weights.sum(), torch.tensor(1.0)) and weights[0, 2] == 0
        assert (weights[0, [4, 1, 3, 0]].diff() < 0).all()  # lower energy, more weight
    assert sharp[0, 4] > 0.99 and soft[0, 4] < 0.5


@pytest.mark.parametrize(
    ("planner_class", "settings", "message"),
    [
        (CEMPlanner, dict(samples=20, top_k=21), "top_k=21"),
        (CEMPlanner, dict(top_k=0), "top_k=0"),
        (CEMPlanner, dict(samples=0), "samples=0"),
        (MPPIPlanner, dict(iterations=0), "iterations=0"),
        (MPPIPlanner, dict(horizon=0), "horizon=0"),
        (MPPIPlanner, dict(temperature=0.0), "temperature=0.0"),
        (MPPIPlanner, dict(init_std=-0.1), "init_std=-0.1"),
        (CEMPlanner, dict(min_std=2.0), "min_std=2.0"),
        (CEMPlanner, dict(low=1.0, high=-1.0), "low=1.0"),
    ],
)
def test_bad_settings_raise_at_construction(planner_class, settings, message):
    with pytest.raises(ValueError, match=message):
        planner_class(ACTION_DIM, **settings)


def test_bad_inputs_to_plan_raise():
    planner = CEMPlanner(ACTION_DIM, samples=4, top_k=2, iterations=1)
    energy_fn = quadratic(torch.zeros(HORIZON, ACTION_DIM))
    with pytest.raises(ValueError, match=r"init_mean shape \(1, 3, 4\)"):
        planner.plan(energy_fn, torch.zeros(1, 3, ACTION_DIM))
    with pytest.raises(ValueError, match=r"energy_fn returned shape \(1, 4, 1\)"):
        planner.plan(lambda actions: energy_fn(actions)[..., None])
    with pytest.raises(ValueError, match="1 generator"):
        planner.plan(energy_fn, generator=torch.Generator(), batch_size=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("planner_class", PLANNERS)
def test_plans_on_cuda(planner_class):
    target = torch.linspace(-0.8, 0.8, HORIZON * ACTION_DIM, device="cuda").reshape(HORIZON, ACTION_DIM)
    result = planner_class(ACTION_DIM, device="cuda").plan(quadratic(target), batch_size=2)
    assert result.actions.device.type == "cuda"
    assert (result.actions - target).abs().max() < 0.05
