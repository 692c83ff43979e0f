"""The latent readout: the train stage writes it next to the predictor, it reads positions from prepared
latents, and the latent world's energy adds exactly `latent_readout_weight` x its squared distance."""
from __future__ import annotations

import pytest
import torch

from agent.worlds import LatentWorld
from envs.dataset import EpisodeStore
from tests.world_model.test_train_predictor import embedded_run, train_config  # noqa: F401 (fixture)
from world_model import train_predictor
from world_model.latent_cache import load_stage_encoder
from world_model.latent_readout import load_latent_readout
from world_model.predictor import load_predictor

READOUT = ("predictor.latent_readout.steps=300", "predictor.latent_readout.batch_size=64",
           "predictor.latent_readout.val_frames=100", "predictor.latent_readout.hidden=32")


def test_train_stage_writes_the_latent_readout_and_the_energy_adds_its_term(tmp_path, embedded_run,  # noqa: F811
                                                                          tiny_dataset_dir):
    cfg = train_config(embedded_run, tmp_path / "predictor", *READOUT, "predictor.latent_readout.qpos_indices=[1]")
    train_predictor.main(cfg)
    readout = load_latent_readout(tmp_path / "predictor")
    meta = (tmp_path / "predictor" / "latent_readout.json").read_text()
    assert readout.config.qpos_indices == (1,) and "val_median_error_per_position" in meta
    predictor, _ = load_predictor(tmp_path / "predictor")
    encoder = load_stage_encoder(cfg)
    episode = EpisodeStore(tiny_dataset_dir / "val").episode(0)
    frames, states = episode["frames"], episode["proprio"]
    with torch.no_grad():
        latents = predictor.prepare_latents(encoder.encode_images(frames))  # (T+1, N', D')
        read = readout(latents)[:, 0]  # (T+1,): the elbow angle (bounded; the shoulder turns freely)
    elbow = torch.tensor(episode["qpos"][:, 1])
    assert (read - elbow).abs().mean() < (readout.mean - elbow).abs().mean()  # better than guessing the mean
    actions = torch.rand(1, 6, 2, predictor.config.block * 2) * 2 - 1  # (B, K, H, block*A)
    energies = []
    for weight in (0.0, 1.0, 2.0):
        world = LatentWorld(encoder, predictor, latent_readout=readout, latent_readout_weight=weight)
        world.set_goal(frames[-1:])  # the goal image only
        world.observe(frames[:1], states[:1])
        energies.append(world.energy_fn()(actions))  # (1, K)
    assert not torch.allclose(energies[1], energies[0])
    torch.testing.assert_close(energies[2] - energies[0], 2 * (energies[1] - energies[0]), rtol=1e-4, atol=1e-5)
    world = LatentWorld(encoder, predictor, latent_readout=readout, latent_readout_weight=1.0, latent_weight=0.0)
    world.set_goal(frames[-1:])
    world.observe(frames[:1], states[:1])
    # the readout's term alone
    torch.testing.assert_close(world.energy_fn()(actions), energies[1] - energies[0], rtol=1e-4, atol=1e-5)


def test_bad_latent_readout_settings_are_refused(tmp_path, embedded_run):  # noqa: F811
    cfg = train_config(embedded_run, tmp_path / "predictor", *READOUT, "predictor.latent_readout.qpos_indices=[7]")
    expected = r"predictor.latent_readout.qpos_indices=\[7\] is invalid; expected indices in \[0, 2\)"
    with pytest.raises(ValueError, match=expected):
        train_predictor.main(cfg)
    with pytest.raises(FileNotFoundError, match="predictor.latent_readout.steps"):
        load_latent_readout(tmp_path / "nowhere")
    predictor, _ = load_predictor(tmp_path / "predictor")
    with pytest.raises(ValueError, match=r"latent_readout_weight=1.0 is invalid"):
        LatentWorld(load_stage_encoder(cfg), predictor, latent_readout_weight=1.0)
    with pytest.raises(ValueError, match=r"latent_weight=0.0 is invalid; expected > 0, or 0 with a readout term"):
        LatentWorld(load_stage_encoder(cfg), predictor, latent_weight=0.0)
