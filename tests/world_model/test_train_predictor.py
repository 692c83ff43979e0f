"""Predictor training (`train`): real steps lower the held-out loss, a killed run resumes to the same
weights, a non-finite loss keeps the last good checkpoint, mismatched inputs are one-line errors."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from agent.config import compose_config
from bookkeeping.io import sha256_file
from tests.conftest import REPO
from tests.world_model.test_event_log import read_scalars
from tests.world_model.test_latent_cache import save_tiny_encoder
from world_model import latent_cache, train_predictor
from world_model.windows import WindowData
from world_model.latent_cache import LatentCache
from world_model.predictor import Predictor, load_predictor

TINY_PREDICTOR = [
    "predictor.pool_grid=2", "predictor.projection_dim=16", "predictor.width=32", "predictor.depth=2",
    "predictor.heads=2", "predictor.block=2", "predictor.context_frames=2",
    "predictor.train.batch_size=16", "predictor.train.epochs=2", "predictor.train.warmup_steps=2",
    "predictor.train.lr=3e-3", "predictor.train.val_windows=32", "predictor.train.checkpoint_every=3",
    "predictor.train.bf16=false",
]


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory, tiny_dataset_dir) -> Path:
    """A run directory with a tiny random encoder and its latent cache (grid 2 x 2, width 32)."""
    run_dir = tmp_path_factory.mktemp("embedded")
    save_tiny_encoder(run_dir / "encoder", seed=0)
    latent_cache.main(compose_config(run_dir, [f"paths.dataset={tiny_dataset_dir}", "device=cpu",
                                               "embed.pool_grid=2", "embed.splits=[train,val]"]))
    return run_dir


def train_config(embedded_run: Path, predictor_dir: Path, *overrides: str):
    return compose_config(embedded_run, [f"paths.predictor={predictor_dir}", "device=cpu", *TINY_PREDICTOR, *overrides])


def test_training_steps_lower_the_loss(embedded_run):
    cfg = train_config(embedded_run, embedded_run / "unused", "predictor.train.loss=l2")
    cache = LatentCache(embedded_run / "latents" / "train")
    torch.manual_seed(cfg.seed)
    model = Predictor(train_predictor.predictor_config(cfg.predictor, cache))
    train_predictor.fit_normalisation(model, cache, cfg.seed)
    data = WindowData(cache, model, window_frames=2 + cfg.predictor.train.rollout_steps)
    batch = data.batch(data.windows[torch.randperm(len(data.windows))[:32]], torch.device("cpu"))
    untrained = train_predictor.window_losses(model, *batch, cfg.predictor.train.rollout_steps, "l2")
    torch.testing.assert_close(untrained["teacher_forcing"], untrained["copy_last"])  # the baseline it starts at
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    losses = []
    for _ in range(40):
        loss = train_predictor.window_losses(model, *batch, cfg.predictor.train.rollout_steps, "l2")["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.93 * losses[0]  # from the copy-last start (random-encoder latents change little)


def test_train_stage_writes_the_predictor(tmp_path, embedded_run):
    cfg = train_config(embedded_run, tmp_path / "predictor")
    train_predictor.main(cfg)
    model, meta = load_predictor(tmp_path / "predictor")
    cache = LatentCache(embedded_run / "latents" / "train")
    assert meta["encoder_fingerprint"] == cache.fingerprint and meta["action_dim"] == 2 and meta["block"] == 2
    assert model.config.latent_dim == 32 and model.config.context_frames == 2
    history = json.loads((tmp_path / "predictor" / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2] and np.isfinite(meta["val_loss"])
    for name in ("config.yaml", "checkpoints/last.pt"):
        assert (tmp_path / "predictor" / name).exists()


def test_the_lean_predictor_option_trains_its_own_shape(tmp_path, embedded_run):
    """`predictor=lean` (configs/predictor/lean.yaml, issue 28's fast planner) is the default predictor's inputs and
    training with its own transformer shape."""
    lean = OmegaConf.load(REPO / "configs" / "predictor" / "lean.yaml")
    shape = {key: lean[key] for key in ("width", "depth", "heads", "condition_width")}
    default = compose_config(embedded_run, [])
    assert shape != {key: default.predictor[key] for key in shape}
    tiny_training = [item for item in TINY_PREDICTOR if item.split("=")[0].rsplit(".", 1)[-1] not in shape]
    cfg = compose_config(embedded_run, ["predictor=lean", f"paths.predictor={tmp_path / 'lean'}", "device=cpu",
                                        *tiny_training])
    assert cfg.predictor.train.loss == default.predictor.train.loss and cfg.predictor.use_proprio
    train_predictor.main(cfg)
    model, _ = load_predictor(tmp_path / "lean")
    assert {key: getattr(model.config, key) for key in shape} == shape and len(model.blocks) == shape["depth"]
    preset, reacher = (compose_config(embedded_run, [f"experiment={name}"]) for name in ("reacher_lean", "reacher"))
    assert {key: preset.predictor[key] for key in shape} == shape  # the reacher preset with it, and its own epochs
    assert preset.predictor.train.epochs == lean.train.epochs != reacher.predictor.train.epochs
    assert preset.planner.iterations == reacher.planner.iterations // 3  # and it plans faster, holding by PD control
    assert list(preset.evaluate.joint_hold.agents) == ["latent", "amortized", "amortized_cem"]
    preset.planner.iterations, preset.evaluate.joint_hold.agents = reacher.planner.iterations, []
    reacher.evaluate.joint_hold.agents = []
    assert preset.evaluate == reacher.evaluate and preset.planner == reacher.planner  # the rest is the reacher's


def test_killed_training_resumes_to_the_same_weights(tmp_path, embedded_run, monkeypatch):
    train_predictor.main(train_config(embedded_run, tmp_path / "straight"))
    save_checkpoint = train_predictor.save_checkpoint

    def save_then_die(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first checkpoint (step 3)

    monkeypatch.setattr(train_predictor, "save_checkpoint", save_then_die)
    cfg = train_config(embedded_run, tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        train_predictor.main(cfg)
    monkeypatch.undo()
    assert torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    train_predictor.main(cfg)
    straight, _ = load_predictor(tmp_path / "straight")
    resumed, _ = load_predictor(tmp_path / "killed")
    for (name, expected), actual in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, msg=name)
    histories = [json.loads((tmp_path / name / "history.json").read_text()) for name in ("straight", "killed")]
    for resumed_epoch, straight_epoch in zip(*histories[::-1]):  # the killed epoch's mean counts its first steps too
        assert resumed_epoch == pytest.approx(straight_epoch)
    assert len(histories[0]) == len(histories[1]) == 2
    for tag in ("train/loss", "val/loss"):  # the curves too: the killed run's steps, then the resumed run's
        straight_curve, resumed_curve = (read_scalars(tmp_path / name / "tensorboard", tag)
                                         for name in ("straight", "killed"))
        assert [step for step, _ in resumed_curve] == [step for step, _ in straight_curve]
        assert [value for _, value in resumed_curve] == pytest.approx([value for _, value in straight_curve])


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, embedded_run, monkeypatch):
    shutil.copytree(embedded_run / "latents", tmp_path / "latents")
    cfg = train_config(embedded_run, tmp_path / "predictor", f"paths.latents={tmp_path / 'latents'}")
    save_checkpoint = train_predictor.save_checkpoint

    def save_then_die(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first checkpoint (step 3)

    monkeypatch.setattr(train_predictor, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_predictor.main(cfg)
    monkeypatch.undo()
    checkpoint = tmp_path / "predictor" / "checkpoints" / "last.pt"
    before = sha256_file(checkpoint)
    poisoned = np.load(tmp_path / "latents" / "train" / "actions.npy", mmap_mode="r+")
    poisoned[:] = np.nan
    poisoned.flush()
    with pytest.raises(train_predictor.NonFiniteLossError, match="non-finite training loss.*last good checkpoint"):
        train_predictor.main(cfg)  # resumes at step 3, then the loss turns NaN
    assert sha256_file(checkpoint) == before


def test_a_rerun_with_other_settings_is_refused_or_starts_afresh(tmp_path, embedded_run):
    """Changed training settings never resume the old weights: refused by name, or with
    run.overwrite=true trained afresh, to the weights of a fresh run."""
    train_predictor.main(train_config(embedded_run, tmp_path / "predictor", "predictor.train.epochs=1"))
    changed = ["predictor.train.epochs=1", "predictor.train.loss=l2"]
    refusal = r"predictor checkpoint .* other settings \(predictor.train.loss: 'l1' -> 'l2'\); pass run.overwrite=true"
    with pytest.raises(ValueError, match=refusal):
        train_predictor.main(train_config(embedded_run, tmp_path / "predictor", *changed))
    # not resuming deletes too
    cfg = train_config(embedded_run, tmp_path / "predictor", *changed, "predictor.train.resume=false")
    with pytest.raises(ValueError, match=r"other settings \(predictor.train.loss: 'l1' -> 'l2'\)"):
        train_predictor.main(cfg)
    assert (tmp_path / "predictor" / "predictor.safetensors").exists()
    train_predictor.main(train_config(embedded_run, tmp_path / "predictor", *changed, "run.overwrite=true"))
    train_predictor.main(train_config(embedded_run, tmp_path / "fresh", *changed))
    overwritten, meta = load_predictor(tmp_path / "predictor")
    fresh, _ = load_predictor(tmp_path / "fresh")
    assert meta["loss"] == "l2"
    for name, tensor in fresh.state_dict().items():
        torch.testing.assert_close(overwritten.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_an_unreadable_checkpoint_is_refused_unless_overwrite(tmp_path, embedded_run):
    train_predictor.main(train_config(embedded_run, tmp_path / "predictor", "predictor.train.epochs=1"))
    (tmp_path / "predictor" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"predictor checkpoint .* cannot be read \(UnpicklingError\); "
                                         "pass run.overwrite=true"):
        train_predictor.main(train_config(embedded_run, tmp_path / "predictor", "predictor.train.epochs=1"))
    train_predictor.main(train_config(embedded_run, tmp_path / "predictor", "predictor.train.epochs=1",
                                      "run.overwrite=true"))
    assert torch.load(tmp_path / "predictor" / "checkpoints" / "last.pt", weights_only=True)["step"] > 0


def test_mismatched_inputs_are_one_line_errors(tmp_path, embedded_run):
    with pytest.raises(ValueError, match=r"pool_grid=4 does not fit the latent cache grid 2x2"):
        train_predictor.main(train_config(embedded_run, tmp_path / "a", "predictor.pool_grid=4"))
    with pytest.raises(ValueError, match="latent cache .* holds task 'reacher', but env.name='point_mass'"):
        train_predictor.main(train_config(embedded_run, tmp_path / "b", "env=point_mass"))
    other_encoder = save_tiny_encoder(tmp_path / "other_encoder", seed=5)
    with pytest.raises(ValueError, match="made by encoder .* not by the current encoder"):
        train_predictor.main(train_config(embedded_run, tmp_path / "c", f"paths.encoder={other_encoder}"))


def test_latents_of_a_dataset_without_its_hinge_joints_are_refused_before_training(tmp_path, embedded_run):
    """The position readout reads hinge joints as (sin, cos): latents of a dataset collected before `collect`
    recorded which joints are hinges are refused in one line before any step (not with a KeyError at the end)."""
    run_dir = tmp_path / "run"
    shutil.copytree(embedded_run, run_dir)
    manifest_path = run_dir / "latents" / "train" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["dataset_meta"]["angular_positions"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"^the dataset of latent cache '.*/latents/train' records no angular_positions"
                                         r" .* collect it again$"):
        train_predictor.main(train_config(run_dir, tmp_path / "predictor", "predictor.readout.steps=5"))
    assert not (tmp_path / "predictor").exists()


def test_torchrun_data_parallel_matches_one_process(tmp_path, embedded_run):
    """Two Gloo processes under torchrun, each on half of every batch, train the same model as one
    process on whole batches (DDP averages the gradients of the two halves)."""
    overrides = [f"hydra.run.dir={embedded_run}", "device=cpu", "threads=1", *TINY_PREDICTOR]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "agent.cli", "train", f"paths.predictor={tmp_path / 'ddp'}", *overrides]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data parallel: 2 processes, 8 windows each per step" in result.stdout
    train_predictor.main(train_config(embedded_run, tmp_path / "single"))
    parallel, _ = load_predictor(tmp_path / "ddp")
    single, _ = load_predictor(tmp_path / "single")
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(parallel.state_dict()[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
    parallel_history, single_history = (json.loads((tmp_path / name / "history.json").read_text())
                                        for name in ("ddp", "single"))
    assert len(parallel_history) == 2  # the logged training loss is the epoch's mean over both processes
    np.testing.assert_allclose([e["train_loss"] for e in parallel_history], [e["train_loss"] for e in single_history],
                               rtol=1e-3)


@pytest.mark.parametrize("override, expected", [
    ("predictor.train.epochs=0", "predictor.train.epochs=0 is invalid; expected a positive int"),
    ("predictor.train.batch_size=abc", "predictor.train.batch_size='abc' is invalid; expected a positive int"),
    ("predictor.train.lr=-1", "predictor.train.lr=-1 is invalid; expected a positive number"),
    ("predictor.train.loss=l3", "predictor.train.loss='l3' is invalid; expected l1 or l2"),
])
def test_bad_training_settings_are_refused_before_anything_is_written(tmp_path, embedded_run, override, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        train_predictor.main(train_config(embedded_run, tmp_path / "predictor", override))
    assert not (tmp_path / "predictor").exists()
