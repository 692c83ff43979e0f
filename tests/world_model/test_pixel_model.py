"""The pixel world model (issue 27): cached rollouts, shared contexts, safe loading, its energy, and learning."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from world_model.energy import frame_distance
from world_model.pixel_model import (PixelModelConfig, PixelWorldModel, load_pixel_model, save_pixel_model,
                                     to_images, to_model_frames)

TINY = PixelModelConfig(image_size=16, action_dim=2, block=2, channels=(4, 8), width=16, depth=2, heads=2,
                        context_frames=2, condition_width=8)


def trained_looking(config: PixelModelConfig = TINY, seed: int = 0) -> PixelWorldModel:
    """A model whose output layer is not zero (an untrained one copies the last frame whatever it is asked)."""
    torch.manual_seed(seed)
    model = PixelWorldModel(config)
    torch.nn.init.normal_(model.up[-1][0].weight, std=0.05)
    for block in model.blocks:
        torch.nn.init.normal_(block.modulation.weight, std=0.05)
    return model.eval()


@torch.no_grad()
def test_cached_rollout_matches_recomputing_the_whole_sequence():
    model = trained_looking()
    context = torch.rand(1, 2, 3, 16, 16) - 0.5
    context_actions, actions = torch.rand(1, 1, 4), torch.rand(1, 3, 4)
    rolled = model.rollout(context, actions, context_actions)  # (1, 3, 3, 16, 16)
    frames, all_actions = context, torch.cat([context_actions, actions], dim=1)
    for step in range(3):  # no caches: the whole sequence so far, each time
        next_frame = model(frames, all_actions[:, : frames.shape[1]])[:, -1:]
        torch.testing.assert_close(rolled[:, step], next_frame[:, 0], atol=1e-5, rtol=1e-4)
        frames = torch.cat([frames, next_frame], dim=1)
    assert (rolled[:, -1] - context[:, -1]).abs().max() > 1e-3  # the test would see a model that only copies


@torch.no_grad()
def test_candidates_share_their_context_row():
    model = trained_looking()
    context, context_actions = torch.rand(2, 2, 3, 16, 16) - 0.5, torch.rand(2, 1, 4)
    actions = torch.rand(6, 2, 4)  # 3 candidates per context row
    together = model.rollout(context, actions, context_actions)
    alone = model.rollout(context[1:], actions[4:5], context_actions[1:])
    torch.testing.assert_close(together[4:5], alone, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="not a multiple"):
        model.rollout(context, actions[:5], context_actions)


def test_saved_model_loads_back_and_damage_is_one_line(tmp_path):
    model = trained_looking()
    save_pixel_model(model, tmp_path, {"task": "reacher"})
    loaded, meta = load_pixel_model(tmp_path)
    assert meta["task"] == "reacher" and loaded.config == model.config
    frames, actions = torch.rand(1, 2, 3, 16, 16) - 0.5, torch.rand(1, 2, 4)
    torch.testing.assert_close(loaded(frames, actions), model(frames, actions))
    weights = tmp_path / "pixel_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read") as error:
        load_pixel_model(tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="no trained pixel model"):
        load_pixel_model(tmp_path / "nothing")


def test_config_and_energy_refuse_bad_values():
    with pytest.raises(ValueError, match="multiple of 2\\^2"):
        PixelModelConfig(image_size=18, action_dim=2, channels=(4, 8))
    with pytest.raises(ValueError, match="pixel.energy='l3' is invalid; expected one of"):
        frame_distance(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), "l3")


def test_frame_energy_ranks_the_goal_first():
    goal = torch.rand(2, 1, 3, 16, 16) - 0.5
    candidates = torch.stack([goal[:, 0], goal[:, 0] + 0.05, torch.rand(2, 3, 16, 16) - 0.5], dim=1)  # (2, 3, ...)
    for norm in ("l2", "l1", "l2_blur"):
        distances = frame_distance(candidates, goal, norm)  # (2, 3)
        assert distances.shape == (2, 3) and (distances.argsort(dim=1)[:, 0] == 0).all()
        assert (distances[:, 1] < distances[:, 2]).all()
    images = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    assert torch.equal(to_images(to_model_frames(images)), images)


def test_a_few_steps_beat_copying_the_last_frame(tiny_dataset_dir, tmp_path):
    """Real reacher frames, real training through `train_pixel.main`: the held-out one-step error falls
    below copy-last, and the checkpoint and outputs are written."""
    from world_model.train_pixel import main

    cfg = OmegaConf.create({
        "seed": 0, "device": "cpu", "env": {"name": "reacher", "image_size": 64}, "run": {"overwrite": False},
        "paths": {"dataset": str(tiny_dataset_dir), "pixel_model": str(tmp_path / "pixel_model")},
        "pixel": {"resolution": 16, "channels": [8, 16], "block": 2, "width": 32, "depth": 1, "heads": 2,
                  "mlp_ratio": 2.0, "context_frames": 2, "condition_width": 16, "energy": "l2",
                  "train": {"epochs": 6, "batch_size": 16, "lr": 3e-3, "min_lr": 1e-4, "weight_decay": 0.0,
                            "warmup_steps": 5, "grad_clip": 1.0, "loss": "l2", "rollout_steps": 2,
                            "time_budget_s": None, "val_windows": 64, "checkpoint_every": 20, "bf16": False}}})
    main(cfg)
    model, meta = load_pixel_model(tmp_path / "pixel_model")
    assert meta["val"]["teacher_forcing"] < 0.97 * meta["val"]["copy_last"], meta["val"]  # 0.94 when written
    assert meta["parameters"] == sum(p.numel() for p in model.parameters()) and meta["stopped_by"] == "epochs"
    assert (tmp_path / "pixel_model" / "checkpoints" / "last.pt").is_file()


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
@pytest.mark.filterwarnings("error:torch.compile failed")  # a compile that falls back to eager fails the test
def test_a_compiled_pixel_world_scores_as_the_eager_one():
    """Inductor's graph of one pixel world call (the rollout from two context frames and the frame distances on it)
    gives the eager energies (evaluate.compile; in its own file from the latent world's, so that two cold compiles of
    30-45 s run on both test workers)."""
    from agent.pixel_world import PixelWorld

    model = trained_looking()  # 16 px frames, block 2, action_dim 2
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)  # (T, B, H, W, 3)
    executed = rng.uniform(-1, 1, (2, 4)).astype(np.float32)  # (B, block*A) between the two frames
    candidates = torch.rand(2, 5, 2, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, K, H, block*A)
    energies = []
    for compile in (False, True):
        world = PixelWorld(model, aggregate="min", compile=compile)
        world.set_goal(frames[1])
        world.observe(frames[0])
        world.observe(frames[1], executed_block=executed)
        energies.append(world.energy_fn()(candidates))
    torch.testing.assert_close(energies[1], energies[0], rtol=1e-4, atol=1e-4)
