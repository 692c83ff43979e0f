"""Latent cache (`embed`): contents match the encoder, reruns are no-ops, a killed embed resumes,
another encoder's cache is refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from envs.dataset import EpisodeStore
from agent.config import compose_config
from world_model.encoder import load_encoder
from world_model.latent_cache import PROGRESS, LatentCache, embed_split, load_stage_encoder, main
from world_model.predictor import pool_token_grid


def save_tiny_encoder(directory: Path, seed: int) -> Path:
    """A random transformers VJEPA2 model (32 px, 4 x 4 tokens of width 32) saved as the pipeline saves it."""
    config = transformers.VJEPA2Config(
        crop_size=32, patch_size=8, tubelet_size=2, frames_per_clip=2, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, pred_hidden_size=16, pred_num_hidden_layers=1, pred_num_attention_heads=2)
    torch.manual_seed(seed)
    transformers.VJEPA2Model(config).save_pretrained(directory)
    return directory


def cache_config(run_dir: Path, dataset_dir: Path, encoder_dir: Path, *overrides: str):
    return compose_config(run_dir, [f"paths.dataset={dataset_dir}", f"paths.encoder={encoder_dir}", "device=cpu",
                                    "embed.pool_grid=2", "embed.chunk_episodes=5", *overrides])


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return save_tiny_encoder(root / "first", seed=0), save_tiny_encoder(root / "second", seed=1)


def test_embed_writes_the_encoders_pooled_latents(tmp_path, tiny_dataset_dir, encoder_dirs):
    cfg = cache_config(tmp_path, tiny_dataset_dir, encoder_dirs[0])
    main(cfg)
    encoder = load_stage_encoder(cfg)  # the same settings (bf16 or not) as the stage
    cache = LatentCache(tmp_path / "latents" / "train", encoder.fingerprint)
    store = EpisodeStore(tiny_dataset_dir / "train")
    assert cache.latents.shape == (len(store), store.episode_length + 1, 2, 2, 32)
    assert cache.latents.dtype == np.float16
    assert (cache.grid, cache.dim, cache.action_dim, cache.manifest["task"]) == (2, 32, 2, "reacher")
    episode = store.episode(3)
    expected = pool_token_grid(encoder.encode_images(episode["frames"]).unflatten(1, encoder.grid), 2)
    np.testing.assert_allclose(cache.latents[3], expected.numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(cache.actions[3], episode["actions"])
    assert {split.name for split in (tmp_path / "latents").iterdir() if split.is_dir()} == {"train", "val", "eval"}
    assert (tmp_path / "latents" / "config.yaml").exists()

    written = (cache.split_dir / "latents.npy").stat().st_mtime_ns
    main(cfg)  # complete and matching: nothing to do
    assert (cache.split_dir / "latents.npy").stat().st_mtime_ns == written


class InterruptedEncoder:
    """The real encoder, interrupted (as by Ctrl-C) once it has embedded `calls` batches."""

    def __init__(self, encoder, calls: int):
        self.encoder, self.calls = encoder, calls

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode_images(self, images):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.encoder.encode_images(images)


def test_killed_embed_resumes_after_the_last_chunk(tmp_path, tiny_dataset_dir, encoder_dirs):
    cfg = cache_config(tmp_path, tiny_dataset_dir, encoder_dirs[0])
    store, encoder = EpisodeStore(tiny_dataset_dir / "train"), load_encoder(str(encoder_dirs[0]))
    split_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):  # a chunk is 5 episodes x 21 frames = 2 batches of 64
        embed_split(store, InterruptedEncoder(encoder, calls=3), split_dir, cfg.embed)
    assert (split_dir / PROGRESS).exists() and not (split_dir / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="no complete latent cache"):
        LatentCache(split_dir)
    resumed = embed_split(store, encoder, split_dir, cfg.embed)
    fresh = embed_split(store, encoder, tmp_path / "fresh", cfg.embed)
    np.testing.assert_array_equal(resumed.latents, fresh.latents)
    assert not (split_dir / PROGRESS).exists()


def test_cache_made_by_another_encoder_is_refused(tmp_path, tiny_dataset_dir, encoder_dirs):
    main(cache_config(tmp_path, tiny_dataset_dir, encoder_dirs[0]))
    first, second = (load_encoder(str(directory)).fingerprint for directory in encoder_dirs)
    with pytest.raises(ValueError, match=rf"latent cache .* other settings \(encoder_fingerprint: '{first[:23]}\.\.\. "
                                         rf"-> '{second[:23]}\.\.\.\); pass run.overwrite=true"):
        main(cache_config(tmp_path, tiny_dataset_dir, encoder_dirs[1]))
    assert (tmp_path / "latents" / "config.yaml").exists()  # refused: nothing changed, so `run` still skips it
    with pytest.raises(ValueError, match=r"other settings \(grid \(embed.pool_grid\): 2 -> 1\)"):
        main(cache_config(tmp_path, tiny_dataset_dir, encoder_dirs[0], "embed.pool_grid=1"))
    with pytest.raises(ValueError, match="made by encoder"):
        LatentCache(tmp_path / "latents" / "val", second)
    main(cache_config(tmp_path, tiny_dataset_dir, encoder_dirs[1], "run.overwrite=true"))
    assert LatentCache(tmp_path / "latents" / "val", second).fingerprint == second
