"""The position readout: it learns where a marked token is (a position, or an angle that has turned
several times), the train stage writes it next to the predictor, and the latent world's energy adds
exactly `position_weight` x its squared position error."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from agent.worlds import LatentWorld
from envs.dataset import EpisodeStore
from tests.world_model.test_train_predictor import embedded_run, train_config  # noqa: F401 (fixture)
from world_model import train_predictor
from world_model.latent_cache import load_stage_encoder
from world_model.position_readout import (PositionReadout, ReadoutConfig, load_position_readout,
                                          train_position_readout)
from world_model.predictor import load_predictor

READOUT = OmegaConf.create({"steps": 1500, "batch_size": 64, "lr": 3e-3, "hidden": 32, "points": 1,
                             "mlp_head": False, "val_frames": 200, "qpos_indices": None,
                             "grid_channels": 0})


class MarkedGridCache:
    """A latent cache whose 4 x 4 token grid marks a point: the token under it carries a bump that also
    encodes where in the token the point is. qpos is the point's (x, y) in [-0.3, 0.3], or with
    `angle=True` the angle, in [-3 pi, 3 pi), of a point turning on a circle of radius 0.25."""

    grid, dim = 4, 8

    def __init__(self, episodes: int, seed: int, angle: bool = False):
        generator = np.random.default_rng(seed)
        if angle:
            qpos = generator.uniform(-3 * np.pi, 3 * np.pi, (episodes, 10, 1)).astype(np.float32)
            point = 0.25 * np.concatenate([np.cos(qpos), np.sin(qpos)], axis=-1)  # (E, T, 2)
        else:
            qpos = point = generator.uniform(-0.3, 0.3, (episodes, 10, 2)).astype(np.float32)
        cells = np.clip(((point + 0.3) / 0.6 * self.grid).astype(int), 0, self.grid - 1)  # (E, T, 2) column, row
        within = (point + 0.3) / 0.6 * self.grid - cells  # (E, T, 2) in [0, 1)
        noise = generator.standard_normal((episodes, 10, self.grid, self.grid, self.dim))  # (E, T, g, g, D)
        self.latents = 0.1 * noise.astype(np.float32)
        episode_index, step_index = np.meshgrid(np.arange(episodes), np.arange(10), indexing="ij")
        marked = self.latents[episode_index, step_index, cells[..., 1], cells[..., 0]]  # (E, T, D)
        marked[..., 0] += 1.0
        marked[..., 1:3] += within
        self.latents[episode_index, step_index, cells[..., 1], cells[..., 0]] = marked
        self.qpos = qpos

    def __len__(self) -> int:
        return len(self.qpos)

    def field(self, name: str) -> np.ndarray:
        assert name == "qpos"
        return self.qpos


def test_readout_learns_where_the_marked_token_is(tmp_path):
    train, val = MarkedGridCache(200, seed=0), MarkedGridCache(40, seed=1)
    metrics = train_position_readout(READOUT, train, val, tmp_path, seed=0)
    readout = load_position_readout(tmp_path)
    tokens = torch.from_numpy(val.latents[:, 0])  # (E, 4, 4, D)
    with torch.no_grad():
        errors = (readout(tokens) - torch.from_numpy(val.qpos[:, 0])).norm(dim=-1)
    guessing_the_mean = np.linalg.norm(val.qpos[:, 0] - train.qpos.reshape(-1, 2).mean(0), axis=-1)
    assert float(errors.median()) < 0.2 * float(np.median(guessing_the_mean))
    assert metrics["val_median_error"] < 0.2 * float(np.median(guessing_the_mean))


def test_readout_of_chosen_qpos_reads_those_and_is_no_position_energy(tmp_path):
    """qpos_indices=[1]: the readout predicts the point's y alone (the cube preset reads the cube's x, y, z this
    way, from the whole grid: grid_channels), and the energy's position term, which needs the proprio's
    positions, refuses it."""
    train, val = MarkedGridCache(200, seed=0), MarkedGridCache(40, seed=1)
    chosen = OmegaConf.merge(READOUT, {"qpos_indices": [1], "grid_channels": 4})  # the whole grid, as the cube's
    metrics = train_position_readout(chosen, train, val, tmp_path, seed=0)
    readout = load_position_readout(tmp_path)
    assert readout.config.qpos_indices == (1,) and readout.config.positions == 1 and readout.config.grid_channels == 4
    with torch.no_grad():
        errors = (readout(torch.from_numpy(val.latents[:, 0]))[:, 0] - torch.from_numpy(val.qpos[:, 0, 1])).abs()
    assert float(errors.median()) < 0.2 * float(np.median(np.abs(val.qpos[:, 0, 1])))
    assert len(metrics["val_median_error_per_position"]) == 1
    with pytest.raises(ValueError, match=r"predictor.readout.qpos_indices=\[2\] is invalid; expected null or indices"):
        train_position_readout(OmegaConf.merge(READOUT, {"qpos_indices": [2]}), train, val, tmp_path, seed=0)


def test_readout_reads_an_angle_modulo_full_turns(tmp_path):
    """A frame shows an angle only modulo 2 pi: the readout returns it wrapped, and its error is the
    wrapped difference (a plain regression of the unwrapped angle could not beat guessing)."""
    train, val = MarkedGridCache(200, seed=0, angle=True), MarkedGridCache(40, seed=1, angle=True)
    two_points_mlp = OmegaConf.merge(READOUT, {"points": 2, "mlp_head": True})
    metrics = train_position_readout(two_points_mlp, train, val, tmp_path, seed=0, angles=True)
    readout = load_position_readout(tmp_path)
    assert readout.config.angles
    tokens = torch.from_numpy(val.latents[:, 0])  # (E, 4, 4, D)
    with torch.no_grad():
        angles = readout(tokens)  # (E, 1)
    assert float(angles.abs().max()) <= np.pi
    errors = readout.position_error(angles, torch.from_numpy(val.qpos[:, 0])).abs()  # (E, 1), wrapped
    assert float(errors.median()) < 0.15  # rad; a guess is off by pi / 2 on average
    assert metrics["val_median_error"] < 0.15
    assert metrics["val_median_error_per_position"] == [pytest.approx(metrics["val_median_error"])]  # one angle
    turned = readout.position_error(torch.tensor([[3.1]]), torch.tensor([[-3.1 + 4 * np.pi]]))
    torch.testing.assert_close(turned, torch.tensor([[6.2 - 2 * np.pi]]))


def test_train_stage_writes_the_readout_and_the_energy_adds_its_term(  # noqa: F811
        tmp_path, embedded_run, tiny_dataset_dir):
    cfg = train_config(embedded_run, tmp_path / "predictor", "predictor.readout.steps=5",
                       "predictor.readout.batch_size=16", "predictor.readout.val_frames=20")
    train_predictor.main(cfg)
    written = {path.name for path in (tmp_path / "predictor").iterdir()}
    assert {"position_readout.safetensors", "position_readout.json"} <= written
    predictor, _ = load_predictor(tmp_path / "predictor")
    encoder = load_stage_encoder(cfg)
    readout = load_position_readout(tmp_path / "predictor", encoder_fingerprint=encoder.fingerprint)
    with pytest.raises(ValueError, match="reads tokens of encoder .* not of the current encoder"):
        load_position_readout(tmp_path / "predictor", encoder_fingerprint="0" * 64)
    episode = EpisodeStore(tiny_dataset_dir / "val").episode(0)
    frames, states = episode["frames"], episode["proprio"]
    actions = torch.rand(1, 6, 2, predictor.config.block * 2) * 2 - 1  # (B, K, H, block*A)
    energies = []
    for weight in (0.0, 1.0, 2.0):
        world = LatentWorld(encoder, predictor, position_readout=readout, position_weight=weight)
        world.set_goal(frames[-1:], None)  # the goal image only
        world.observe(frames[:1], states[:1])
        energies.append(world.energy_fn()(actions))  # (1, K)
    assert not torch.allclose(energies[1], energies[0])
    torch.testing.assert_close(energies[2] - energies[0], 2 * (energies[1] - energies[0]), rtol=1e-4, atol=1e-5)


def test_position_energy_without_a_readout_is_refused(tmp_path, embedded_run):  # noqa: F811
    cfg = train_config(embedded_run, tmp_path / "predictor", "predictor.train.epochs=1")
    train_predictor.main(cfg)
    predictor, _ = load_predictor(tmp_path / "predictor")
    with pytest.raises(ValueError, match="position_weight=1.0 needs .* position readout"):
        LatentWorld(load_stage_encoder(cfg), predictor, position_weight=1.0)
    chosen = PositionReadout(ReadoutConfig(grid=4, token_dim=8, positions=1, qpos_indices=(0,)))
    with pytest.raises(ValueError, match=r"position_weight=1.0 needs a position readout of the proprio's positions; "
                                         r"this one reads qpos \[0\]"):
        LatentWorld(load_stage_encoder(cfg), predictor, position_readout=chosen, position_weight=1.0)
    with pytest.raises(FileNotFoundError, match="predictor.readout.steps"):
        load_position_readout(tmp_path / "predictor")


def test_readout_of_another_layout_is_refused(tmp_path):
    few_steps = OmegaConf.merge(READOUT, {"steps": 5})
    train_position_readout(few_steps, MarkedGridCache(20, seed=0), MarkedGridCache(5, seed=1), tmp_path, seed=0)
    meta_path = tmp_path / "position_readout.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["points"] = 3  # weights saved for 1 keypoint
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"position_readout.safetensors' does not match the shapes in "
                                         r"position_readout.json \(.*\); retrain it"):
        load_position_readout(tmp_path)


@pytest.mark.parametrize("damage, expected", [
    ("truncate", r"position_readout.safetensors' cannot be read \(.*\); retrain it"),
    ("garbage", r"position_readout.safetensors' cannot be read \(.*\); retrain it"),
    ("config", r"position_readout.json' does not describe a position readout \(TypeError: .*'grid'\); retrain it"),
])
def test_a_damaged_readout_is_a_one_line_error(tmp_path, damage, expected):
    """Every saved model loads through bookkeeping.io.load_module: a damaged file names itself, no traceback."""
    train_position_readout(OmegaConf.merge(READOUT, {"steps": 5}), MarkedGridCache(20, seed=0),
                           MarkedGridCache(5, seed=1), tmp_path, seed=0)
    weights, meta_path = tmp_path / "position_readout.safetensors", tmp_path / "position_readout.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage":
        weights.write_bytes(b"not a safetensors file" * 10)
    else:
        meta = json.loads(meta_path.read_text())
        del meta["config"]["grid"]
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=expected) as error:
        load_position_readout(tmp_path)
    assert "\n" not in str(error.value)


def test_a_task_mixing_slide_and_hinge_joints_reads_each_in_its_own_way():
    """angular_positions per qpos (a cart's slide, a pole's hinge): the slide is standardised, the hinge
    read as (sin, cos) and wrapped; what the network is trained to output decodes back to the positions."""
    readout = PositionReadout(ReadoutConfig(grid=2, token_dim=4, positions=3, angles=(False, True, False)))
    positions = torch.tensor([[0.5, 3.0, -2.0], [-1.5, -3.0, 4.0], [2.0, 7.0, 0.0]])  # 7 rad: over a full turn
    readout.fit_normalisation(torch.randn(3, 2, 2, 4), positions)
    assert readout.position_mean[1] == 0 and readout.position_std[1] == 1  # the hinge is not standardised
    targets = readout.targets(positions)  # (B, 2 slides + sin + cos)
    torch.testing.assert_close(targets[:, 2:], torch.stack([positions[:, 1].sin(), positions[:, 1].cos()], dim=1))
    readout.outputs = lambda tokens: targets  # a network that outputs exactly its targets
    decoded = readout(torch.zeros(3, 2, 2, 4))
    wrapped = torch.remainder(positions[:, 1] + torch.pi, 2 * torch.pi) - torch.pi
    torch.testing.assert_close(decoded, torch.stack([positions[:, 0], wrapped, positions[:, 2]], dim=1))
    error = readout.position_error(torch.tensor([[3.0, 3.0, 3.0]]), torch.tensor([[-3.0, -3.0, -3.0]]))
    torch.testing.assert_close(error, torch.tensor([[6.0, 6.0 - 2 * torch.pi, 6.0]]))  # only the hinge wraps
    with pytest.raises(ValueError, match=r"angular_positions=\[True\] has 1 flags; expected one per position \(3\)"):
        ReadoutConfig(grid=2, token_dim=4, positions=3, angles=(True,))
