"""The on-disk episode format: sharded, appendable, memory-mappable, checksummed, crash-safe.

One split is one directory:

    <split>/manifest.json          format version, meta (task, sizes, its hinge joints, config), committed shards
    <split>/shard_000000/          one .npy per field, every array indexed by episode first:
        frames.npy   uint8   (E, T+1, H, W, 3)
        actions.npy  float32 (E, T, A)
        proprio.npy  float32 (E, T+1, P)
        qpos.npy     float64 (E, T+1, nq)
        qvel.npy     float64 (E, T+1, nv)
        seed.npy     int64   (E,)            reset seed of each episode

A shard is written to a hidden temporary directory, fsynced, renamed into place, and only then
listed in the manifest (itself replaced atomically). Readers trust the manifest alone, so a killed
writer never exposes a half-written shard; `ShardWriter` deletes leftovers and appends after the
last committed episode. A committed shard damaged later (truncated, deleted) fails its checksum:
readers raise `CorruptShardError`, and a reopened `ShardWriter` drops it and the shards after it, so
`collect` makes their episodes again.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from bookkeeping.io import atomic_write_json, read_json, sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FIELDS = ("frames", "actions", "proprio", "qpos", "qvel", "seed")


class CorruptShardError(ValueError):
    """A shard file is missing, truncated or does not match its recorded checksum."""


def check_shard(split_dir: Path, shard: dict) -> None:
    """Raise CorruptShardError unless every file of `shard` exists and matches its checksum."""
    for field in FIELDS:
        path = split_dir / shard["name"] / f"{field}.npy"
        if not path.exists():
            raise CorruptShardError(f"{path} is missing")
        if sha256_file(path) != shard["checksums"][path.name]:
            raise CorruptShardError(f"{path} does not match its checksum (truncated or corrupted)")


def recorded_angular_positions(meta: dict, dataset: str) -> list[bool]:
    """The task's hinge joints (one flag per qpos) as `collect` records them in a split's meta; `dataset` names
    where the meta comes from. A dataset collected before they were recorded is refused in one line."""
    if "angular_positions" not in meta:
        raise ValueError(f"{dataset} records no angular_positions (which joints are hinges): it was collected by an "
                         "older version of jepa-agent; collect it again")
    return [bool(flag) for flag in meta["angular_positions"]]


def read_manifest(split_dir: str | Path) -> dict | None:
    path = Path(split_dir) / MANIFEST
    if not path.exists():
        return None
    return read_json(path)


class ShardWriter:
    """Appends episodes to a split; `flush()` commits buffered episodes as one shard.

    Reopening a split with the same `meta` resumes after the last committed episode
    (`writer.num_committed`); a different `meta` is refused, naming the differing keys.
    """

    def __init__(self, split_dir: str | Path, meta: dict):
        self.split_dir = Path(split_dir)
        self.split_dir.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(self.split_dir)
        if manifest is None:
            manifest = {"format_version": FORMAT_VERSION, "meta": meta, "shards": []}
        elif manifest["meta"] != meta:
            old, new = manifest["meta"], meta
            differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"dataset {str(self.split_dir)!r} was made with different settings ({', '.join(differing)}); "
                "use another run directory or delete it"
            )
        self.manifest = manifest
        self._drop_corrupt_shards()
        self._remove_uncommitted()
        self.buffer: list[dict[str, np.ndarray]] = []

    @property
    def num_committed(self) -> int:
        return sum(shard["episodes"] for shard in self.manifest["shards"])

    def _drop_corrupt_shards(self) -> None:
        """Forget the first corrupt shard and every one after it (episodes are numbered in order)."""
        for position, shard in enumerate(self.manifest["shards"]):
            try:
                check_shard(self.split_dir, shard)
            except CorruptShardError as error:
                dropped = len(self.manifest["shards"]) - position
                warnings.warn(f"{error}: its episodes and those of the {dropped - 1} shard(s) after it are "
                              "collected again", stacklevel=3)
                self.manifest = {**self.manifest, "shards": self.manifest["shards"][:position]}
                atomic_write_json(self.split_dir / MANIFEST, self.manifest)
                return

    def _remove_uncommitted(self) -> None:
        committed = {shard["name"] for shard in self.manifest["shards"]}
        for entry in self.split_dir.iterdir():
            if entry.is_dir() and entry.name not in committed:
                shutil.rmtree(entry)  # a shard renamed into place but never listed, or a temp dir

    def add(self, episode: dict[str, np.ndarray]) -> None:
        missing = [field for field in FIELDS if field not in episode]
        if missing:
            raise ValueError(f"episode is missing fields {missing}; expected {list(FIELDS)}")
        self.buffer.append(episode)

    def flush(self) -> None:
        if not self.buffer:
            return
        index = len(self.manifest["shards"])
        name = f"shard_{index:06d}"
        temp_dir = self.split_dir / f".{name}.tmp"
        shutil.rmtree(temp_dir, ignore_errors=True)
        temp_dir.mkdir()
        checksums = {}
        for field in FIELDS:
            array = np.stack([np.asarray(episode[field]) for episode in self.buffer])
            path = temp_dir / f"{field}.npy"
            with open(path, "wb") as handle:
                np.save(handle, array)
                handle.flush()
                os.fsync(handle.fileno())
            checksums[path.name] = sha256_file(path)
        os.replace(temp_dir, self.split_dir / name)
        shard = {"name": name, "episodes": len(self.buffer), "first_episode": self.num_committed,
                 "checksums": checksums}
        self.manifest = {**self.manifest, "shards": [*self.manifest["shards"], shard]}
        atomic_write_json(self.split_dir / MANIFEST, self.manifest)
        self.buffer = []


class EpisodeStore:
    """Read-only access to the committed episodes of one split (memory-mapped shards).

    `skip_corrupt=True` drops shards whose checksum fails (with a warning) instead of raising
    `CorruptShardError`. Checksums are verified when a shard is first opened.
    """

    def __init__(self, split_dir: str | Path, skip_corrupt: bool = False):
        self.split_dir = Path(split_dir)
        manifest = read_manifest(self.split_dir)
        if manifest is None:
            raise FileNotFoundError(
                f"no dataset at {str(self.split_dir)!r} (missing {MANIFEST}); make one with `jepa-agent collect`, "
                "or point hydra.run.dir at a run directory that has one"
            )
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{self.split_dir / MANIFEST}: format_version {manifest.get('format_version')!r} "
                             f"is not supported; expected {FORMAT_VERSION}")
        self.meta: dict = manifest["meta"]
        self.skip_corrupt = skip_corrupt
        self._shards: list[dict] = list(manifest["shards"])
        self._opened: dict[str, dict[str, np.ndarray]] = {}
        if skip_corrupt:
            self._shards = [shard for shard in self._shards if self._try_open(shard)]
        self._offsets = np.cumsum([0] + [shard["episodes"] for shard in self._shards])

    @property
    def episode_length(self) -> int:
        """T: actions per episode (each episode has T + 1 frames)."""
        return int(self.meta["episode_length"])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _try_open(self, shard: dict) -> bool:
        try:
            self._open(shard)
            return True
        except CorruptShardError as error:
            warnings.warn(f"skipping corrupt shard: {error}", stacklevel=3)
            return False

    def _open(self, shard: dict) -> dict[str, np.ndarray]:
        if shard["name"] in self._opened:
            return self._opened[shard["name"]]
        check_shard(self.split_dir, shard)
        arrays = {}
        for field in FIELDS:
            path = self.split_dir / shard["name"] / f"{field}.npy"
            try:
                arrays[field] = np.load(path, mmap_mode="r")
            except ValueError as error:
                raise CorruptShardError(f"{path} is unreadable: {error}") from None
        self._opened[shard["name"]] = arrays
        return arrays

    def verify(self) -> list[str]:
        """Check every shard; returns the error messages of the corrupt ones (empty if all good)."""
        errors = []
        for shard in self._shards:
            try:
                self._open(shard)
            except CorruptShardError as error:
                errors.append(str(error))
        return errors

    def episode(self, index: int) -> dict[str, np.ndarray]:
        """One episode: frames (T+1, H, W, 3), actions (T, A), proprio, qpos, qvel, seed."""
        if not 0 <= index < len(self):
            raise IndexError(f"episode {index} is out of range; the split has {len(self)} episodes")
        shard_index = int(np.searchsorted(self._offsets, index, side="right") - 1)
        arrays = self._open(self._shards[shard_index])
        local = index - int(self._offsets[shard_index])
        return {field: np.asarray(arrays[field][local]) for field in FIELDS}

    def shard_arrays(self, field: str) -> list[np.ndarray]:
        """The memory-mapped array of `field` for every shard, in episode order."""
        if field not in FIELDS:
            raise ValueError(f"unknown field {field!r}; expected one of {list(FIELDS)}")
        return [self._open(shard)[field] for shard in self._shards]

    def array(self, field: str) -> np.ndarray:
        """The whole field (E, ...) loaded into memory; iterate `episode()` for large frame sets."""
        parts = self.shard_arrays(field)
        return np.concatenate(parts) if parts else np.empty((0,))
