"""Goal positions from the nearest training frames: they read a held-out frame's positions (slides and hinge angles
across +-pi) from a cache whose tokens vary smoothly with them, and `evaluate.energy.goal_positions` builds them
from a run's training cache into the latent world's position term and the goal policy's reading of the goal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.amortized import PolicyProposer
from agent.build import load_proposer, make_goal_position_reader
from agent.worlds import LatentWorld
from envs.dataset import EpisodeStore
from tests.world_model.test_train_predictor import embedded_run, train_config  # noqa: F401 (fixture)
from world_model import train_predictor
from world_model.goal_policy import GoalPolicy, PolicyConfig
from world_model.policy_training import main as train_policy
from world_model.latent_cache import load_stage_encoder
from world_model.nearest_frames import NearestFramePositions
from world_model.position_readout import PositionReadout, ReadoutConfig, load_position_readout
from world_model.predictor import load_predictor, pool_token_grid


class SmoothCache:
    """A latent cache of (E, 10, 2, 2, D) tokens that are smooth functions of qpos (x in [-0.3, 0.3], an angle in
    [-pi, pi)): each token holds sines and cosines of both at its own frequencies, plus a little noise."""

    def __init__(self, episodes: int, seed: int):
        generator = np.random.default_rng(seed)
        x = generator.uniform(-0.3, 0.3, (episodes, 10, 1))
        angle = generator.uniform(-np.pi, np.pi, (episodes, 10, 1))
        self.qpos = np.concatenate([x, angle], -1).astype(np.float32)  # (E, 10, 2)
        frequencies = np.arange(1, 9)  # (8,)
        features = np.concatenate([np.sin(frequencies * x * 5), np.cos(frequencies * x * 5),
                                   np.sin(frequencies * angle), np.cos(frequencies * angle)], -1)  # (E, 10, 32)
        features = features + 0.01 * generator.standard_normal(features.shape)
        self.latents = features.reshape(episodes, 10, 2, 2, 8).astype(np.float16)

    def __len__(self) -> int:
        return len(self.qpos)

    def field(self, name: str) -> np.ndarray:
        assert name == "qpos"
        return self.qpos


def wrapped(values: np.ndarray) -> np.ndarray:
    return np.remainder(values + np.pi, 2 * np.pi) - np.pi


def test_nearest_frames_read_held_out_positions_and_angles():
    train, held_out = SmoothCache(400, seed=0), SmoothCache(20, seed=1)
    angular = torch.tensor([False, True])
    reader = NearestFramePositions.from_cache(train, angular, neighbours=4)
    tokens = torch.from_numpy(held_out.latents[:, 0].astype(np.float32))  # (E, 2, 2, D)
    read = reader(tokens).numpy()  # (E, 2)
    errors = np.abs(wrapped(read - held_out.qpos[:, 0]))  # (E, 2)
    assert np.median(errors[:, 0]) < 0.01 and np.median(errors[:, 1]) < 0.05  # 4000 frames: x 0.3 mm / 0.6 m apart
    assert np.abs(read[:, 1]).max() <= np.pi
    exact = NearestFramePositions.from_cache(train, angular, neighbours=1)  # a training frame reads its own qpos
    own = torch.from_numpy(train.latents[:5, 3].astype(np.float32))
    np.testing.assert_allclose(exact(own).numpy(), train.qpos[:5, 3], atol=1e-6)
    fine = own.repeat_interleave(2, 1).repeat_interleave(2, 2)  # a 4 x 4 grid of the same tokens pools back
    np.testing.assert_allclose(exact(fine).numpy(), train.qpos[:5, 3], atol=1e-6)


def test_neighbours_average_angles_across_pi():
    tokens = torch.tensor([[0.0], [0.1], [5.0]]).reshape(3, 1, 1, 1)  # frames 0 and 1 lie nearest a query at 0.05
    positions = torch.tensor([[np.pi - 0.02], [-np.pi + 0.04], [0.0]])
    reader = NearestFramePositions(tokens, positions, torch.tensor([True]), neighbours=2)
    read = float(reader(torch.full((1, 1, 1, 1), 0.05)))
    assert abs(wrapped(read - (np.pi + 0.01))) < 1e-5  # between them across pi, not near 0 as a plain mean would say
    linear = NearestFramePositions(tokens, positions, torch.tensor([False]), neighbours=2)
    assert float(linear(torch.full((1, 1, 1, 1), 0.05))) == pytest.approx(0.01, abs=1e-5)
    with pytest.raises(ValueError, match=r"goal_neighbours=4 is invalid; expected an integer in \[1, 3\]"):
        NearestFramePositions(tokens, positions, torch.tensor([True]), neighbours=4)


def test_goal_positions_setting_builds_the_reader_into_the_position_term(tmp_path, embedded_run,  # noqa: F811
                                                                         tiny_dataset_dir):
    cfg = train_config(embedded_run, tmp_path / "predictor", "predictor.readout.steps=5",
                       "predictor.readout.batch_size=16", "predictor.readout.val_frames=20")
    train_predictor.main(cfg)
    predictor, _ = load_predictor(tmp_path / "predictor")
    encoder = load_stage_encoder(cfg)
    readout = load_position_readout(tmp_path / "predictor", encoder_fingerprint=encoder.fingerprint)
    assert make_goal_position_reader(cfg, readout, encoder.fingerprint, "cpu") is None  # the default: the readout
    cfg.evaluate.energy.goal_positions, cfg.evaluate.energy.goal_neighbours = "nearest_frames", 1
    reader = make_goal_position_reader(cfg, readout, encoder.fingerprint, "cpu")
    episode = EpisodeStore(tiny_dataset_dir / "train").episode(0)
    frames, states = episode["frames"], episode["proprio"]
    world = LatentWorld(encoder, predictor, position_readout=readout, position_weight=1.0, goal_position_reader=reader)
    world.set_goal(frames[3:4], None)  # a training frame: its nearest frame is itself
    nq = readout.config.positions
    np.testing.assert_allclose(world.goal_positions.numpy(), episode["qpos"][3:4, :nq], atol=1e-5)
    # the goal policy reads the goal's positions as the world does (the nearest frames'), or the readout's
    world.observe(frames[:1], states[:1])
    goal_targets = readout.targets(torch.tensor(episode["qpos"][3:4, :nq], dtype=torch.float32))  # (1, R)
    outputs = readout.outputs(pool_token_grid(world.goal_tokens.float(), readout.config.grid)).shape[-1]  # R
    policy = GoalPolicy(PolicyConfig(latent_size=0, proprio_dim=0, readout_dim=outputs, block_dim=predictor.config.block
                                     * predictor.config.action_dim, blocks=2)).eval()
    for goal_from_world in (True, False):
        proposer = PolicyProposer(policy, readout, None, world, goal_from_world)
        assert proposer(2).shape == (1, 2, policy.config.block_dim)
        expected = (goal_targets if goal_from_world else
                    readout.outputs(pool_token_grid(world.goal_tokens.float(), readout.config.grid)))
        torch.testing.assert_close(proposer.goal_readout, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(goal_targets, expected, atol=1e-3)  # the readout reads this goal elsewhere
    cfg.paths.policy = str(tmp_path / "policy")  # the setting reaches the run's goal policy as the agent loads it
    cfg.policy.steps, cfg.policy.batch_size, cfg.policy.val_samples = 5, 16, 32
    train_policy(cfg)
    for setting in ("readout", "nearest_frames"):
        cfg.evaluate.energy.goal_positions = setting
        assert load_proposer(cfg, world, "cpu").goal_from_world == (setting == "nearest_frames")
    world.position_weight = 0.0
    with pytest.raises(ValueError, match="reads the goal's positions from the world's .* but got position_weight=0.0 "
                                         "and one position readout; expected a position readout and "
                                         "evaluate.energy.position_weight > 0"):
        PolicyProposer(policy, readout, None, world, goal_from_world=True)
    cfg.evaluate.energy.goal_neighbours = 0
    with pytest.raises(ValueError, match=r"goal_neighbours=0 is invalid; expected an integer in \[1, "):
        make_goal_position_reader(cfg, readout, encoder.fingerprint, "cpu")
    for key, value, expected in (("goal_neighbours", 2.5, r"goal_neighbours=2.5 is invalid; expected an integer in "),
                                 ("goal_positions", "knn", r"goal_positions='knn' is invalid; expected one of "
                                                           r"\['readout', 'nearest_frames'\]")):
        cfg.evaluate.energy[key] = value
        with pytest.raises(ValueError, match=expected):
            make_goal_position_reader(cfg, readout, encoder.fingerprint, "cpu")
    cfg.evaluate.energy.goal_positions = "nearest_frames"
    with pytest.raises(ValueError, match="goal_positions=nearest_frames reads the goal's positions .* position_weight"):
        make_goal_position_reader(cfg, None, encoder.fingerprint, "cpu")
    with pytest.raises(ValueError, match="not by the current encoder"):
        make_goal_position_reader(cfg, readout, "0" * 64, "cpu")
    cube_like = PositionReadout(ReadoutConfig(grid=2, token_dim=8, positions=3, qpos_indices=(14, 15, 16)))
    with pytest.raises(ValueError, match=r"nearest_frames reads the proprio's positions; this position readout reads "
                                         r"qpos \[14, 15, 16\]: expected goal_positions=readout"):
        make_goal_position_reader(cfg, cube_like, encoder.fingerprint, "cpu")
