"""Dataset format: round trip, checksums, crash leftovers, refusing mismatched appends."""
from __future__ import annotations

import json

import numpy as np
import pytest

from envs.dataset import CorruptShardError, EpisodeStore, ShardWriter, recorded_angular_positions
from tests.conftest import TINY_EPISODE_LENGTH, TINY_SPLITS


def fake_episode(index: int, length: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(index)
    return {
        "frames": rng.integers(0, 255, (length + 1, 16, 16, 3), dtype=np.uint8),
        "actions": rng.uniform(-1, 1, (length, 2)).astype(np.float32),
        "proprio": rng.normal(size=(length + 1, 4)).astype(np.float32),
        "qpos": rng.normal(size=(length + 1, 2)),
        "qvel": rng.normal(size=(length + 1, 2)),
        "seed": np.int64(index),
    }


META = {"task": "fake", "episode_length": 5}


def write(split_dir, indices, per_shard=2):
    writer = ShardWriter(split_dir, META)
    for index in indices:
        writer.add(fake_episode(index))
        if len(writer.buffer) == per_shard:
            writer.flush()
    writer.flush()
    return writer


def test_round_trip_and_append(tmp_path):
    write(tmp_path, range(5))
    write(tmp_path, range(5, 7))  # appending continues after the committed episodes
    store = EpisodeStore(tmp_path)
    assert len(store) == 7 and store.episode_length == 5
    for index in (0, 3, 6):
        expected, got = fake_episode(index), store.episode(index)
        for field, value in expected.items():
            np.testing.assert_array_equal(got[field], value)
    assert store.array("actions").shape == (7, 5, 2)
    assert store.array("seed").tolist() == list(range(7))


def test_real_tiny_dataset_reads_back(tiny_dataset_dir):
    for split, count in TINY_SPLITS.items():
        store = EpisodeStore(tiny_dataset_dir / split)
        assert len(store) == count and store.verify() == []
        episode = store.episode(count - 1)
        assert episode["frames"].shape == (TINY_EPISODE_LENGTH + 1, 64, 64, 3)
        assert episode["actions"].shape == (TINY_EPISODE_LENGTH, 2)
        assert np.abs(episode["actions"]).max() <= 1.0
    train_seeds = set(EpisodeStore(tiny_dataset_dir / "train").array("seed").tolist())
    eval_seeds = set(EpisodeStore(tiny_dataset_dir / "eval").array("seed").tolist())
    assert not train_seeds & eval_seeds


def test_corrupted_shard_is_named_and_other_shards_still_load(tmp_path):
    write(tmp_path, range(6))
    frames = tmp_path / "shard_000001" / "frames.npy"
    frames.write_bytes(frames.read_bytes()[:-100])  # truncate
    store = EpisodeStore(tmp_path)
    with pytest.raises(CorruptShardError, match="shard_000001/frames.npy"):
        store.episode(2)
    np.testing.assert_array_equal(store.episode(0)["actions"], fake_episode(0)["actions"])
    np.testing.assert_array_equal(store.episode(5)["actions"], fake_episode(5)["actions"])
    assert len(store.verify()) == 1
    with pytest.warns(UserWarning, match="shard_000001"):
        skipping = EpisodeStore(tmp_path, skip_corrupt=True)
    assert len(skipping) == 4
    assert skipping.array("seed").tolist() == [0, 1, 4, 5]


def test_a_reopened_writer_drops_a_corrupt_shard_and_those_after_it(tmp_path):
    """A rerun of collect makes the damaged shard's episodes again (and the later ones, as episodes
    are numbered in order), to the same data as an undamaged split."""
    write(tmp_path, range(6))
    frames = tmp_path / "shard_000001" / "frames.npy"
    frames.write_bytes(frames.read_bytes()[:-100])
    with pytest.warns(UserWarning, match="shard_000001/frames.npy .* 1 shard"):
        writer = ShardWriter(tmp_path, META)
    assert writer.num_committed == 2 and sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["shard_000000"]
    write(tmp_path, range(2, 6))
    store = EpisodeStore(tmp_path)
    assert store.verify() == [] and store.array("seed").tolist() == list(range(6))


def test_bitflip_is_detected(tmp_path):
    write(tmp_path, range(2))
    path = tmp_path / "shard_000000" / "actions.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="does not match its checksum"):
        EpisodeStore(tmp_path).episode(0)


def test_uncommitted_leftovers_are_invisible_and_removed(tmp_path):
    write(tmp_path, range(2))
    (tmp_path / ".shard_000001.tmp").mkdir()
    (tmp_path / "shard_000001").mkdir()  # renamed into place but never listed in the manifest
    (tmp_path / "shard_000001" / "frames.npy").write_bytes(b"partial")
    assert len(EpisodeStore(tmp_path)) == 2
    writer = ShardWriter(tmp_path, META)
    assert writer.num_committed == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["shard_000000"]


def test_different_settings_are_refused(tmp_path):
    write(tmp_path, range(1))
    with pytest.raises(ValueError, match=r"different settings \(episode_length\)"):
        ShardWriter(tmp_path, {**META, "episode_length": 9})


def test_missing_dataset_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="jepa-agent collect"):
        EpisodeStore(tmp_path / "nothing")


def test_manifest_lists_checksums(tmp_path):
    write(tmp_path, range(2))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["shards"][0]["checksums"]) == {f"{f}.npy" for f in
                                                       ("frames", "actions", "proprio", "qpos", "qvel", "seed")}


def test_garbage_json_is_a_one_line_error_naming_the_file(tmp_path):
    from bookkeeping.io import read_json

    for content in ('{"truncated": ', "\x00\xff garbage"):
        path = tmp_path / "manifest.json"
        path.write_bytes(content.encode("latin-1"))
        with pytest.raises(ValueError, match=r"manifest.json' is not valid JSON .*; restore it or delete it"):
            read_json(path)


def test_the_hinge_joints_are_read_from_the_meta_and_a_meta_without_them_is_refused(tiny_dataset_dir):
    store = EpisodeStore(tiny_dataset_dir / "train")
    assert recorded_angular_positions(store.meta, "dataset") == [True, True]  # the reacher's two hinges
    with pytest.raises(ValueError, match=r"^dataset 'old' records no angular_positions \(which joints are hinges\): "
                                         r"it was collected by an older version of jepa-agent; collect it again$"):
        recorded_angular_positions(META, "dataset 'old'")
