"""`jepa-agent run` on damaged or stale outputs: garbage JSON, a lost manifest, damaged weights or latents, an
evaluation of another identity: each repaired, made again, or refused in one line, never reported as up to date."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.agent.test_pipeline import STAGES
from tests.conftest import cli_in_process


def test_a_finished_evaluation_of_another_identity_is_refused_not_reported(micro_run_dir, tmp_path):
    """An evaluation's identity holds what the config sections `run` hashes do not (the model's weights, what the
    code reads: an identity key added with a change of the agent): one it no longer matches is refused in one line,
    not skipped as up to date, and evaluated afresh with run.overwrite=true."""
    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir, run_dir)
    identity_path = run_dir / "eval" / "latent" / "identity.json"
    identity = json.loads(identity_path.read_text())
    del identity["record_format"]  # made before this key entered the identity
    identity_path.write_text(json.dumps(identity))
    result = cli_in_process("run", "experiment=micro", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2 and "evaluate_latent: up to date" not in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: evaluation ")
    assert "record_format" in result.stderr and "run.overwrite=true" in result.stderr
    result = cli_in_process("run", "experiment=micro", "run.overwrite=true", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[run] evaluate_latent ..." in result.stdout
    assert result.stdout.count("up to date, skipped") == len(STAGES) - 1
    assert "record_format" in json.loads(identity_path.read_text())


@pytest.mark.parametrize("damaged, command", [("stages.json", "run"), ("predictor/meta.json", "evaluate")])
def test_garbage_in_a_json_file_is_one_line_naming_it(micro_run_dir, tmp_path, damaged, command):
    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir, run_dir)
    (run_dir / damaged).write_text('{"truncated": ')
    result = cli_in_process(command, "experiment=micro", f"hydra.run.dir={run_dir}")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"{damaged}' is not valid JSON" in last, result.stderr[-2000:]


def test_a_rerun_repairs_a_lost_manifest_and_removes_what_killed_writes_left(micro_run_dir, tmp_path):
    """A deleted `dataset/val/manifest.json` left `run` failing on every rerun ("collect: up to date", then
    "no dataset"): the split is collected again, identical. Temp files and shard folders that killed writes
    left are removed once the command succeeds; files of other names stay."""
    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir, run_dir)
    manifest = run_dir / "dataset" / "val" / "manifest.json"
    original = json.loads(manifest.read_text())
    manifest.unlink()
    leftovers = [run_dir / ".stages.tmp-abc123.json", run_dir / "dataset" / "train" / ".frames.tmp-x1.npy",
                 run_dir / "predictor" / "checkpoints" / ".last.tmp-9.pt"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    (run_dir / "dataset" / "train" / ".shard_00009.tmp").mkdir()  # a shard folder being written
    kept = run_dir / "dataset" / "notes.tmp"  # not a temp name of ours
    kept.write_text("mine")
    result = cli_in_process("run", "experiment=micro", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[run] collect: a dataset split lost its manifest" in result.stdout
    assert json.loads(manifest.read_text())["shards"] == original["shards"]  # the same episodes, checksums and all
    assert not any(path.exists() for path in leftovers)
    assert not (run_dir / "dataset" / "train" / ".shard_00009.tmp").exists()
    assert kept.read_text() == "mine"


def test_a_damaged_predictor_is_one_line(micro_run_dir, tmp_path):
    """Garbage or truncated weights, or a meta.json whose shapes do not match them: a ValueError naming the
    file (in-process), which the command line prints as one line (one case through it)."""
    from world_model.predictor import load_predictor

    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir, run_dir)
    weights, meta = run_dir / "predictor" / "predictor.safetensors", run_dir / "predictor" / "meta.json"
    original_weights, original_meta = weights.read_bytes(), meta.read_text()
    content = json.loads(original_meta)
    content["config"]["width"] *= 2
    meta.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"predictor.safetensors' does not match the shapes in meta.json"):
        load_predictor(run_dir / "predictor")
    meta.write_text(original_meta)
    weights.write_bytes(original_weights[:1000])
    with pytest.raises(ValueError, match=r"predictor.safetensors' cannot be read"):
        load_predictor(run_dir / "predictor")
    weights.write_bytes(os.urandom(4096))
    message = "predictor.safetensors' cannot be read"
    result = cli_in_process("evaluate", "experiment=micro", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]


def test_a_damaged_latent_cache_is_embedded_again(micro_run_dir, tmp_path):
    """Changed values in latents.npy passed as "embed: up to date"; now the cache's checksums (val), or its
    non-finite values (train: its checksum recorded after the change), send a split back to embed, which makes
    it again, identical."""
    import numpy as np

    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir, run_dir)
    originals = {}
    for split, value in (("val", 1.0), ("train", np.nan)):
        path = run_dir / "latents" / split / "latents.npy"
        originals[path] = path.read_bytes()
        latents = np.load(path, mmap_mode="r+")
        latents[0, 0, 0, 0, :4] = latents[0, 0, 0, 0, :4] + value
        latents.flush()
        del latents
    from bookkeeping.io import sha256_file

    manifest = json.loads((run_dir / "latents" / "train" / "manifest.json").read_text())
    manifest["sha256"]["latents.npy"] = sha256_file(run_dir / "latents" / "train" / "latents.npy")
    (run_dir / "latents" / "train" / "manifest.json").write_text(json.dumps(manifest))
    result = cli_in_process("run", "experiment=micro", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[run] embed: val latents.npy does not match its checksum; embedding it again" in result.stdout
    assert "[run] embed: train latents.npy holds values that are not finite; embedding it again" in result.stdout
    assert all(path.read_bytes() == original for path, original in originals.items())
