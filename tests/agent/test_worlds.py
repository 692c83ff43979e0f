"""The latent world's energy: candidates rolled out from the context it kept, scored against the goal."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from agent.worlds import LatentWorld
from tests.world_model.test_latent_cache import save_tiny_encoder
from tests.world_model.test_predictor import tiny_predictor
from world_model.encoder import load_encoder
from world_model.energy import latent_distance


@pytest.mark.parametrize("chunk_size", [4096, 5])  # every env in one predictor call, or one env per call
def test_energy_rolls_out_from_the_last_frames_and_the_block_between_them(tmp_path, chunk_size):
    encoder = load_encoder(str(save_tiny_encoder(tmp_path / "encoder", seed=0)))
    predictor = tiny_predictor(latent_dim=encoder.dim, context_frames=2)  # block 3, action_dim 2
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 2, 32, 32, 3), dtype=np.uint8)  # (T, B, H, W, 3): three observations
    executed = rng.uniform(-1, 1, (2, 2, 6)).astype(np.float32)  # (T-1, B, block*A): the blocks between them
    goal_images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    world = LatentWorld(encoder, predictor, norm="l2", aggregate="sum", chunk_size=chunk_size)
    world.set_goal(goal_images)
    world.observe(frames[0])
    world.observe(frames[1], executed_block=executed[0])
    world.observe(frames[2], executed_block=executed[1])
    candidates = torch.rand(2, 5, 4, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, K, H, block*A)

    energies = world.energy_fn()(candidates)  # (B, K)

    # context_frames=2: frames 1 and 2 are kept with the block executed between them; frame 0 is gone
    context = torch.stack([world.embed(frames[1]), world.embed(frames[2])], dim=1)  # (B, 2, N, D')
    predicted = predictor.rollout(context, candidates.flatten(0, 1), torch.from_numpy(executed[1])[:, None])
    goal = world.embed(goal_images).repeat_interleave(5, dim=0)[:, None]  # (B*K, 1, N, D')
    expected = latent_distance(predicted, goal, "l2").sum(-1).view(2, 5)  # summed over the H blocks
    torch.testing.assert_close(energies, expected, rtol=1e-5, atol=1e-5)
    other_context = predictor.rollout(torch.stack([world.embed(frames[0]), world.embed(frames[2])], dim=1),
                                      candidates.flatten(0, 1), torch.from_numpy(executed[1])[:, None])
    assert not torch.allclose(predicted, other_context)  # the context matters: the check above can fail


@pytest.mark.parametrize(("chunk_size", "calls_made"), [(6, [2, 2, 2]), (12, [3, 3])])
def test_a_compiled_world_keeps_one_shape_for_every_predictor_call(tmp_path, monkeypatch, chunk_size, calls_made):
    """5 envs of 3 candidates in calls of at most 2 (6 rows): the last call is padded with the last env, so
    torch.compile sees one shape (it gives up after 8 recompiles), and the energies are those of the unpadded
    calls. At most 4 envs a call (12 rows): 2 calls of 3 envs, not 4 + 4 with 3 of them padding."""
    encoder = load_encoder(str(save_tiny_encoder(tmp_path / "encoder", seed=0)))
    predictor = tiny_predictor(latent_dim=encoder.dim, context_frames=2)
    monkeypatch.setattr("agent.worlds.compile_method", lambda world, name: None)  # the padding is under test
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 5, 32, 32, 3), dtype=np.uint8)  # (T, B, H, W, 3)
    executed = rng.uniform(-1, 1, (5, 6)).astype(np.float32)
    candidates = torch.rand(5, 3, 2, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, K, H, block*A)
    energies, calls = [], []
    rollout = predictor.rollout
    monkeypatch.setattr(predictor, "rollout", lambda context, *args, **kwargs: calls.append(len(context)) or
                        rollout(context, *args, **kwargs))
    for compile in (False, True):
        world = LatentWorld(encoder, predictor, aggregate="sum", chunk_size=chunk_size, compile=compile)
        world.set_goal(frames[1])
        world.observe(frames[0])
        world.observe(frames[1], executed_block=executed)
        calls.clear()
        energies.append(world.energy_fn()(candidates))
    assert calls == calls_made  # the compiled world's calls; eagerly the last holds fewer envs
    torch.testing.assert_close(energies[1], energies[0], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
@pytest.mark.filterwarnings("error:torch.compile failed")  # a compile that falls back to eager fails the test
def test_a_compiled_latent_world_scores_as_the_eager_one(tmp_path):
    """Inductor's graph of one world call (the rollout from two context frames, and the latent distance, the position
    term and the predicted velocities on it) gives the eager energies, for an env that holds and one that does not.
    (One shape: a cold compile costs 30-45 s on 2 cores; the pixel world's: tests/world_model/test_pixel_model.py.)"""
    import torch._dynamo

    from world_model.position_readout import PositionReadout, ReadoutConfig

    encoder = load_encoder(str(save_tiny_encoder(tmp_path / "encoder", seed=0)))
    predictor = tiny_predictor(latent_dim=encoder.dim, context_frames=2, proprio_dim=4)  # qpos (2), qvel (2)
    readout = PositionReadout(ReadoutConfig(grid=2, token_dim=encoder.dim, positions=2)).eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)  # (T, B, H, W, 3)
    states = np.array([[0.31, -0.21, 0.5, 0.5], [1.0, 1.0, 0.0, 0.0]], dtype=np.float32)  # env 0 at the goal
    executed = rng.uniform(-1, 1, (2, 6)).astype(np.float32)  # (B, block*A) between the two frames
    candidates = torch.rand(2, 5, 2, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, K, H, block*A)
    energies = []
    for compile in (False, True):
        world = LatentWorld(encoder, predictor, aggregate="min", position_readout=readout, position_weight=1.0,
                            state_size=4, hold_radius=0.05, hold_velocity_weight=2.0, compile=compile)
        world.set_goal(frames[1])
        world.goal_positions = torch.tensor([[0.3, -0.2], [0.3, -0.2]])  # (B, nq) as if read from the goal images
        world.observe(frames[0], states=states)
        world.observe(frames[1], states=states, executed_block=executed)
        energies.append(world.energy_fn()(candidates))
    torch.testing.assert_close(energies[1], energies[0], rtol=1e-4, atol=1e-4)
    assert not torch._dynamo.config.suppress_errors


def test_a_compiled_pixel_world_keeps_one_shape_for_every_model_call(monkeypatch):
    """The pixel world pads its last model call as the latent world does (evaluate.compile applies to both)."""
    from agent.pixel_world import PixelWorld
    from tests.world_model.test_pixel_model import trained_looking

    model = trained_looking()  # 16 px frames, block 2, action_dim 2, context 2
    monkeypatch.setattr("agent.pixel_world.compile_method", lambda world, name: None)  # the padding is under test
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 5, 32, 32, 3), dtype=np.uint8)  # (T, B, H, W, 3)
    executed = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    candidates = torch.rand(5, 3, 2, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, K, H, block*A)
    energies, calls = [], []
    rollout = model.rollout
    monkeypatch.setattr(model, "rollout", lambda context, *args: calls.append(len(context)) or rollout(context, *args))
    for compile in (False, True):
        world = PixelWorld(model, aggregate="sum", chunk_size=6, compile=compile)
        world.set_goal(frames[1])
        world.observe(frames[0])
        world.observe(frames[1], executed_block=executed)
        calls.clear()
        energies.append(world.energy_fn()(candidates))
    assert calls == [2, 2, 2]  # 5 envs in calls of 2: the last one padded with the last env
    torch.testing.assert_close(energies[1], energies[0], rtol=1e-5, atol=1e-5)


def test_an_env_at_the_goal_scores_plans_by_every_block_and_their_velocities(tmp_path):
    """hold_radius: env 0, whose observed joints lie at the goal's read-out ones, scores a plan by the mean over its
    blocks plus the weighted predicted velocities and actions squared; env 1, far from it, by its best block."""
    from world_model.position_readout import PositionReadout, ReadoutConfig

    encoder = load_encoder(str(save_tiny_encoder(tmp_path / "encoder", seed=0)))
    predictor = tiny_predictor(latent_dim=encoder.dim, context_frames=2, proprio_dim=4)  # qpos (2) then qvel (2)
    readout = PositionReadout(ReadoutConfig(grid=2, token_dim=encoder.dim, positions=2)).eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)  # (B, H, W, 3)
    candidates = torch.rand(2, 5, 4, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, K, H, block*A)

    def energies(aggregate: str, **hold) -> torch.Tensor:
        world = LatentWorld(encoder, predictor, aggregate=aggregate, position_readout=readout, position_weight=1.0,
                            state_size=4, **hold)
        world.set_goal(frames)
        world.goal_positions = torch.tensor([[0.3, -0.2], [0.3, -0.2]])  # (B, nq) as if read from the goal images
        world.observe(frames, states=np.array([[0.31, -0.21, 0.5, 0.5], [1.0, 1.0, 0.0, 0.0]], dtype=np.float32))
        return world.energy_fn()(candidates)  # (B, K)

    best_block, every_block = energies("min"), energies("sum") / 4
    held = energies("min", hold_radius=0.05)
    torch.testing.assert_close(held[0], every_block[0])
    torch.testing.assert_close(held[1], best_block[1])
    assert not torch.allclose(best_block[0], every_block[0])  # the switch is visible
    still = energies("min", hold_radius=0.05, hold_velocity_weight=2.0)
    assert (still[0] > held[0]).all() and torch.equal(still[1], held[1])
    calm = energies("min", hold_radius=0.05, hold_action_weight=3.0)  # + 3 x the actions squared, over the blocks
    torch.testing.assert_close(calm[0], held[0] + 3.0 * candidates[0].square().mean(-1).mean(-1))
    assert torch.equal(energies("min", hold_radius=0.005), best_block)  # 0.01 rad away: not within the radius
    latent_only = LatentWorld(encoder, predictor, aggregate="sum", state_size=4)  # no position term
    latent_only.set_goal(frames)
    latent_only.observe(frames, states=np.array([[0.31, -0.21, 0.5, 0.5], [1.0, 1.0, 0.0, 0.0]], dtype=np.float32))
    by_latents = energies("min", hold_radius=0.05, hold_position_weight=0.0)  # holding scores the latent alone
    torch.testing.assert_close(by_latents[0], latent_only.energy_fn()(candidates)[0] / 4)
    assert torch.equal(by_latents[1], best_block[1])


@pytest.mark.parametrize("hold, match", [(dict(hold_radius=-1.0), "hold_radius=-1.0"),
                                         (dict(hold_radius=0.1, hold_action_weight=-2.0), "hold_action_weight=-2.0"),
                                         (dict(hold_velocity_weight=1.0), "weights only with a hold radius"),
                                         (dict(hold_position_weight=0.0), "hold_position_weight=0.0"),
                                         (dict(hold_radius=0.1, position_weight=0.0), "position_weight > 0"),
                                         (dict(hold_radius=0.1, hold_velocity_weight=1.0, proprio_dim=2),
                                          "positions only")])
def test_bad_hold_settings_are_refused(tmp_path, hold, match):
    from world_model.position_readout import PositionReadout, ReadoutConfig

    encoder = load_encoder(str(save_tiny_encoder(tmp_path / "encoder", seed=0)))
    predictor = tiny_predictor(latent_dim=encoder.dim, proprio_dim=hold.pop("proprio_dim", 4))
    readout = PositionReadout(ReadoutConfig(grid=2, token_dim=encoder.dim, positions=2))
    settings = dict(position_readout=readout, position_weight=hold.pop("position_weight", 1.0))
    with pytest.raises(ValueError, match=match):
        LatentWorld(encoder, predictor, state_size=4, **settings, **hold)


def test_the_oracle_holding_scores_every_control_step():
    """The simulator world with a hold radius: an env at its goal scores a plan by its mean distance over every
    control step it simulates (standing still beats pushing away); an env far from its goal scores by its best
    block end as before."""
    import envs
    from agent.simulator_world import SimulatorWorld

    task = envs.make("reacher", image_size=32)
    try:
        goal = np.array([0.3, -0.2, 0.0, 0.0])  # (S,) qpos then qvel
        states = np.stack([goal, [1.5, 1.0, 0.0, 0.0]])  # (B, S): env 0 at its goal, at rest; env 1 far away
        candidates = torch.zeros(2, 2, 2, 10)  # (B, K, H, block*A): plan 0 no torque, plan 1 full torque
        candidates[:, 1] = 1.0

        def energies(hold_radius: float) -> torch.Tensor:
            world = SimulatorWorld(task, block=5, aggregate="min", hold_radius=hold_radius)
            world.set_goal(None, np.stack([goal, goal]))
            world.observe(None, states)
            return world.energy_fn()(candidates)  # (B, K)

        best_block, held = energies(0.0), energies(0.1)
        steps = task.simulate(states[[0, 0]], candidates[0].double().numpy().reshape(2, 10, 2))  # (K, T, S)
        torch.testing.assert_close(held[0], torch.tensor(task.distances(steps, goal).mean(-1)).float())
        torch.testing.assert_close(held[1], best_block[1])
        assert held[0, 0] < 1e-6 < held[0, 1]  # at rest at the goal with no torque, it stays
        assert not torch.allclose(held[0], best_block[0])  # the switch is visible
    finally:
        task.close()
