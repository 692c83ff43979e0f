"""Latent cache (`jepa-agent embed`): every frame of every episode embedded once by the frozen encoder.

One directory per dataset split under `cfg.paths.latents`:

    <split>/latents.npy     float16 (E, T+1, n, n, D)  frames embedded one at a time as single images
                                                       (`encode_images`), average-pooled to n x n
    <split>/actions.npy     float32 (E, T, A)          copied from the dataset, as are
    <split>/proprio.npy     float32 (E, T+1, P)        proprio, qpos and qvel (float64)
    <split>/progress.json   while embedding: the cache's identity and the episodes done so far
    <split>/manifest.json   written last: encoder fingerprint, grid, dim, task, action_dim, ..., and the
                            sha256 of every array file (`verify`: `run` embeds a split that fails again)

Episodes are embedded in chunks written in place into `latents.npy` (memory-mapped); a chunk counts
only once `progress.json` (replaced atomically) says so, so a killed embed resumes after the last
chunk. A rerun over a complete matching cache is a no-op; one with another identity (encoder, pool grid,
dataset) is refused, naming the differences, unless `run.overwrite=true` (embed afresh). `config.yaml`
is deleted before a split is (re)embedded (a refused embed keeps it) and written once every split is
complete. `LatentCache` reads a split back and refuses another encoder's.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bookkeeping.checks import check_ints
from envs.dataset import EpisodeStore
from bookkeeping.identity import config_identity
from bookkeeping.io import (atomic_save, atomic_write_json, atomic_write_text, ensure_writable_dir, may_resume,
                     read_json, sha256_file)
from world_model.predictor import pool_token_grid

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
COPIED_FIELDS = ("actions", "proprio", "qpos", "qvel")


def encoder_mismatch(where: Path, cache_fingerprint: str, encoder_fingerprint: str) -> ValueError:
    return ValueError(
        f"latent cache {str(where)!r} was made by encoder {cache_fingerprint[:16]}, not by the current encoder "
        f"{encoder_fingerprint[:16]}; rerun `jepa-agent embed run.overwrite=true` or use another paths.latents"
    )


class LatentCache:
    """Read-only view of one embedded split (arrays memory-mapped)."""

    def __init__(self, split_dir: str | Path, encoder_fingerprint: str | None = None):
        self.split_dir = Path(split_dir)
        manifest_path = self.split_dir / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"no complete latent cache at {str(self.split_dir)!r} (missing {MANIFEST}); "
                                    "make it with `jepa-agent embed`")
        self.manifest: dict = read_json(manifest_path)
        if encoder_fingerprint is not None and self.manifest["encoder_fingerprint"] != encoder_fingerprint:
            raise encoder_mismatch(self.split_dir, self.manifest["encoder_fingerprint"], encoder_fingerprint)
        self.latents = np.load(self.split_dir / "latents.npy", mmap_mode="r")  # (E, T+1, n, n, D) float16
        self.actions = np.load(self.split_dir / "actions.npy", mmap_mode="r")  # (E, T, A)
        self.proprio = np.load(self.split_dir / "proprio.npy", mmap_mode="r")  # (E, T+1, P)

    def __len__(self) -> int:
        return int(self.manifest["episodes"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["encoder_fingerprint"]

    @property
    def grid(self) -> int:
        return int(self.manifest["grid"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def action_dim(self) -> int:
        return int(self.manifest["action_dim"])

    @property
    def episode_length(self) -> int:
        return int(self.manifest["episode_length"])

    def verify(self) -> str | None:
        """None when every array file matches the checksum its manifest recorded and the latents are finite;
        else what is wrong."""
        if "sha256" not in self.manifest:
            return "its manifest records no checksums (made by an older version)"
        for name, recorded in self.manifest["sha256"].items():
            if sha256_file(self.split_dir / name) != recorded:
                return f"{name} does not match its checksum"
        for start in range(0, len(self), 256):  # chunks: a large cache is not read into memory at once
            if not np.isfinite(self.latents[start : start + 256]).all():
                return "latents.npy holds values that are not finite"
        return None

    def field(self, name: str) -> np.ndarray:
        """A copied dataset field (actions, proprio, qpos, qvel), memory-mapped."""
        if name not in COPIED_FIELDS:
            raise ValueError(f"unknown cache field {name!r}; expected one of {list(COPIED_FIELDS)}")
        return np.load(self.split_dir / f"{name}.npy", mmap_mode="r")


def save_npy(path: Path, array: np.ndarray) -> None:
    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            np.save(handle, array)

    atomic_save(path, write)


def cache_identity(store: EpisodeStore, encoder, pool_grid: int) -> dict:
    """What a split's cache depends on; a cache or partial cache with another identity is not reused."""
    height, width = encoder.grid
    return config_identity({}, encoder_fingerprint=encoder.fingerprint, grid=min(pool_grid, height, width),
                           dim=int(encoder.dim), episodes=len(store), episode_length=store.episode_length,
                           task=store.meta.get("task"),
                           action_dim=int(store.meta["action_dim"]),
                           dataset_meta=store.meta)


def prepare_split_dir(split_dir: Path, identity: dict, overwrite: bool) -> int:
    """Decide what to do with what is already there -> episodes already embedded (-1: cache complete).
    A cache of another identity: ValueError naming the differences, or with `overwrite` removed."""
    shown = {"grid": "grid (embed.pool_grid)"}  # how a refusal names the keys it compares
    current = {shown.get(key, key): value for key, value in identity.items()}
    for name in (MANIFEST, PROGRESS):
        path = split_dir / name
        if not path.exists():
            continue
        recorded = read_json(path)
        saved = {shown.get(key, key): recorded.get(key) for key in identity}
        if may_resume("latent cache", split_dir, saved, current, overwrite):
            return -1 if name == MANIFEST else int(recorded["episodes_done"])
        break
    shutil.rmtree(split_dir, ignore_errors=True)
    return 0


@torch.no_grad()
def embed_frames(encoder, frames: np.ndarray, grid: int, batch_size: int) -> np.ndarray:
    """frames uint8 (M, H, W, 3), each embedded on its own -> float16 (M, grid, grid, D)."""
    pooled = []
    for start in range(0, len(frames), batch_size):
        tokens = encoder.encode_images(frames[start : start + batch_size])  # (b, h*w, D)
        tokens = tokens.unflatten(1, tuple(encoder.grid))  # (b, h, w, D)
        pooled.append(pool_token_grid(tokens.float(), grid).cpu().numpy().astype(np.float16))
    return np.concatenate(pooled)


def embed_split(store: EpisodeStore, encoder, split_dir: str | Path, embed_cfg: DictConfig,
                overwrite: bool = False) -> LatentCache:
    """Embed one split into `split_dir` (resumable); returns the complete cache."""
    split_dir = Path(split_dir)
    # "grid": embed.pool_grid, capped by the encoder's
    identity = cache_identity(store, encoder, int(embed_cfg.pool_grid))
    episodes_done = prepare_split_dir(split_dir, identity, overwrite)
    if episodes_done == -1:
        print(f"latent cache {split_dir} is complete; nothing to do")
        return LatentCache(split_dir, identity["encoder_fingerprint"])
    (split_dir.parent / "config.yaml").unlink(missing_ok=True)  # the cache changes: written again once complete
    ensure_writable_dir(split_dir, "latent cache directory")
    count, length, grid = identity["episodes"], identity["episode_length"], identity["grid"]
    latents_path = split_dir / "latents.npy"
    if episodes_done == 0:
        for name in COPIED_FIELDS:
            save_npy(split_dir / f"{name}.npy", store.array(name))
        latents = np.lib.format.open_memmap(latents_path, mode="w+", dtype=np.float16,
                                            shape=(count, length + 1, grid, grid, identity["dim"]))
        atomic_write_json(split_dir / PROGRESS, {**identity, "episodes_done": 0})
    else:
        latents = np.load(latents_path, mmap_mode="r+")  # (E, T+1, n, n, D)
    chunk = int(embed_cfg.chunk_episodes)
    progress = tqdm(total=count, initial=episodes_done, unit="episode", desc=f"embed {split_dir.name}",
                    dynamic_ncols=True)
    for start in range(episodes_done, count, chunk):
        stop = min(start + chunk, count)
        frames = np.concatenate([store.episode(index)["frames"] for index in range(start, stop)])  # (M, H, W, 3)
        pooled = embed_frames(encoder, frames, grid, int(embed_cfg.batch_size))  # (M, n, n, D)
        latents[start:stop] = pooled.reshape(stop - start, length + 1, *pooled.shape[1:])
        latents.flush()
        atomic_write_json(split_dir / PROGRESS, {**identity, "episodes_done": stop})
        progress.update(stop - start)
    progress.close()
    del latents
    checksums = {f"{name}.npy": sha256_file(split_dir / f"{name}.npy") for name in ("latents", *COPIED_FIELDS)}
    atomic_write_json(split_dir / MANIFEST, {**identity, "sha256": checksums})
    (split_dir / PROGRESS).unlink()
    return LatentCache(split_dir, identity["encoder_fingerprint"])


def load_stage_encoder(cfg: DictConfig):
    """The frozen encoder of the pipeline (`cfg.encoder.source`, with its `encode` settings) on `cfg.device`."""
    from world_model.encoder import load_encoder

    return load_encoder(str(cfg.encoder.source), device=cfg.device, chunk_size=int(cfg.encoder.encode.chunk_size),
                        autocast_bf16=bool(cfg.encoder.encode.autocast_bf16))


def main(cfg: DictConfig) -> None:
    """`jepa-agent embed`: cache the latents of every split of `cfg.paths.dataset` in `cfg.paths.latents`."""
    check_ints(cfg.embed, "embed", ("pool_grid", "chunk_episodes", "batch_size"))
    dataset_dir = Path(cfg.paths.dataset)
    splits = [split for split in cfg.embed.splits if (dataset_dir / split).exists()]
    if not splits:
        raise FileNotFoundError(f"no dataset split {list(cfg.embed.splits)} under {str(dataset_dir)!r}; "
                                "make one with `jepa-agent collect`")
    encoder = load_stage_encoder(cfg)
    latents_dir = ensure_writable_dir(cfg.paths.latents, "latent cache directory")
    for split in splits:
        cache = embed_split(EpisodeStore(dataset_dir / split), encoder, latents_dir / split, cfg.embed,
                            bool(cfg.run.overwrite))
        print(f"latents {split}: {cache.latents.shape} float16 in {cache.split_dir}")
    atomic_write_text(latents_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
