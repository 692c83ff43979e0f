"""Predictor training (`jepa-agent train`) on the latent cache.

A training window is episode e, start t (any offset), frames t, t + block, ..., t + block * (C + R - 1)
with C = `predictor.context_frames` and R = `predictor.train.rollout_steps`. On prepared
(pooled, layer-normed) latents, with the L1 or L2 distance of `world_model.energy`:
    teacher forcing: true frames 0..C-1 and their action blocks predict frames 1..C (block-causal);
    rollout:         the prediction of frame C is fed back (attending to the cached true frames, as in
                     planning) and the model rolls on to frames C+1..C+R-1; loss = teacher forcing + rollout.
The proprio, when the predictor reads it, is predicted and scored the same way. AdamW, linear warmup
then cosine decay. After each epoch: validation losses on held-out episodes (the `val` cache), the
latent teacher-forcing term next to the copy-the-last-latent baseline on the same targets, and
`checkpoints/last.pt` (also every `checkpoint_every` steps). A rerun resumes from it when the run's
identity (model, training settings, seed, the training latents: `run_identity`) is the same, and
refuses another unless `run.overwrite=true`, which deletes the other run's predictor and starts
afresh. A non-finite loss stops training and leaves the last good checkpoint as it was. Outputs in
`cfg.paths.predictor`: `predictor.safetensors`, `meta.json`, `config.yaml`, `history.json`, the curves as
TensorBoard event files in `tensorboard/` (every step's losses and lr, every epoch's validation), and with
`predictor.readout.steps > 0` the position readout (`world_model.position_readout`, trained after the
predictor; a rerun retrains only it).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from bookkeeping.checks import check_ints, check_numbers
from bookkeeping.identity import config_identity
from bookkeeping.io import (atomic_save, atomic_write_json, atomic_write_text, ensure_writable_dir, may_resume,
                            read_checkpoint)
from envs.dataset import recorded_angular_positions
from world_model.device import bf16_autocast
from world_model.energy import latent_distance
from world_model.event_log import EventLog
from world_model import distributed
from world_model.fitting import held_out_losses
from world_model.latent_cache import LatentCache, load_stage_encoder
from world_model.familiarity import fit_reference
from world_model.latent_readout import train_latent_readout
from world_model.position_readout import train_position_readout
from world_model.predictor import Predictor, PredictorConfig, save_predictor
from world_model.schedules import learning_rate, set_learning_rate
from world_model.windows import WindowData


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite."""


def predictor_config(predictor_cfg: DictConfig, cache: LatentCache) -> PredictorConfig:
    """The model config from `cfg.predictor` and the cache's latent grid, width and action dim."""
    if predictor_cfg.pool_grid > cache.grid or cache.grid % predictor_cfg.pool_grid:
        raise ValueError(f"predictor.pool_grid={predictor_cfg.pool_grid} does not fit the latent cache grid "
                         f"{cache.grid}x{cache.grid} (it must divide it); re-embed with embed.pool_grid")
    return model_config(predictor_cfg, cache.dim, cache.action_dim,
                        cache.proprio.shape[-1] if predictor_cfg.use_proprio else 0)


def model_config(predictor_cfg: DictConfig, latent_dim: int, action_dim: int, proprio_dim: int = 0) -> PredictorConfig:
    """`cfg.predictor` -> PredictorConfig for latents of width `latent_dim` and a task's action dim."""
    return PredictorConfig(
        latent_dim=latent_dim, action_dim=action_dim, block=predictor_cfg.block,
        pool_grid=predictor_cfg.pool_grid, projection_dim=predictor_cfg.projection_dim,
        flatten_grid=bool(predictor_cfg.flatten_grid),
        width=predictor_cfg.width, depth=predictor_cfg.depth, heads=predictor_cfg.heads,
        mlp_ratio=predictor_cfg.mlp_ratio, context_frames=predictor_cfg.context_frames,
        conditioning=predictor_cfg.conditioning, condition_width=predictor_cfg.condition_width,
        proprio_dim=proprio_dim, proprio_frequencies=predictor_cfg.proprio_frequencies,
    )


def window_losses(model: Predictor, latents, actions, proprio, rollout_steps: int, norm: str) -> dict:
    """Losses (scalars) of a batch of windows; see the module docstring. `loss` is what is trained:
    the latent terms plus the proprio ones. `teacher_forcing` and `rollout` are the latent terms alone,
    `proprio` the proprio ones, and `copy_last` what copying each frame's latent to the next scores on
    the teacher-forcing targets: the baseline `teacher_forcing` is to beat (an untrained predictor
    copies)."""
    context = model.config.context_frames
    (predicted, predicted_proprio), caches = model.advance(
        latents[:, :context], actions[:, :context], proprio[:, :context] if proprio is not None else None,
        caches=None, first_frame=0)  # (B, C, N, D'): predictions of frames 1..C
    teacher_forcing = latent_distance(predicted, latents[:, 1 : context + 1], norm).mean()
    proprio_loss = torch.zeros((), device=latents.device)
    if proprio is not None:
        proprio_loss = latent_distance(predicted_proprio.unsqueeze(-2), proprio[:, 1 : context + 1].unsqueeze(-2),
                                       norm).mean()
    rollout = torch.zeros((), device=latents.device)
    if rollout_steps > 1:  # exactly as a planning rollout goes on: the prediction of frame C fed back
        rolled, rolled_proprio = model.roll_on(
            predicted[:, -1:], predicted_proprio[:, -1:] if proprio is not None else None, caches,
            actions[:, context : context + rollout_steps - 1])  # frames C+1 .. C+R-1
        rollout = latent_distance(rolled, latents[:, context + 1 :], norm).mean()
        if proprio is not None:
            proprio_loss = proprio_loss + latent_distance(
                rolled_proprio.unsqueeze(-2), proprio[:, context + 1 :].unsqueeze(-2), norm).mean()
    copy_last = latent_distance(latents[:, :context], latents[:, 1 : context + 1], norm).mean()
    return {"loss": teacher_forcing + rollout + proprio_loss, "teacher_forcing": teacher_forcing,
            "rollout": rollout, "proprio": proprio_loss, "copy_last": copy_last}


class WindowObjective(nn.Module):
    """`window_losses` as a module, so that DistributedDataParallel can wrap it (DDP averages the
    gradients of whatever runs inside a wrapped module's forward)."""

    def __init__(self, model: Predictor, rollout_steps: int, norm: str):
        super().__init__()
        self.model, self.rollout_steps, self.norm = model, rollout_steps, norm

    def forward(self, latents, actions, proprio) -> dict:
        return window_losses(self.model, latents, actions, proprio, self.rollout_steps, self.norm)


def fit_normalisation(model: Predictor, cache: LatentCache, seed: int, samples: int = 20000) -> None:
    """PCA projection (if configured) and proprio statistics from a sample of training frames."""
    generator = np.random.default_rng(seed)
    episodes = np.sort(generator.choice(len(cache), size=min(len(cache), 64), replace=False))
    raw = torch.from_numpy(cache.latents[episodes]).float()  # (e, T+1, n, n, D)
    tokens = model.pool(raw).reshape(-1, model.config.token_dim)  # (M, token_dim)
    tokens = tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))[:samples]]
    proprio = torch.from_numpy(np.array(cache.proprio)).reshape(-1, cache.proprio.shape[-1])  # (E*(T+1), P)
    model.fit_normalisation(tokens, proprio)


OUTPUTS = ("checkpoints/last.pt", "predictor.safetensors", "meta.json", "history.json")


def run_identity(cfg: DictConfig, model: Predictor, train_cache: LatentCache) -> dict:
    """What the trained predictor depends on: model, training settings, seed, and the training latents
    (their cache's manifest: encoder fingerprint, grid, dataset metadata, episodes). JSON-normalised."""
    return config_identity(cfg, ("seed", "predictor.train"), model=dataclasses.asdict(model.config),
                           latents=train_cache.manifest)


def resumable_state(checkpoint_path: Path, identity: dict, cfg: DictConfig, device) -> dict | None:
    """The checkpoint's state when training should continue from it: it exists, has this identity, and
    `resume` is on. A checkpoint of another identity (ValueError naming the differences), or one that
    cannot be read, is refused unless run.overwrite=true, whatever `resume` says: its run's outputs
    would be deleted."""
    if not checkpoint_path.exists():
        return None
    state = read_checkpoint(checkpoint_path, device, "predictor checkpoint", bool(cfg.run.overwrite))
    if state is None:
        return None
    same_run = may_resume("predictor checkpoint", checkpoint_path, state.get("identity", {}), identity,
                          bool(cfg.run.overwrite))
    return state if same_run and cfg.predictor.train.resume else None


def save_checkpoint(path: Path, model, optimizer, step: int, history: list, identity: dict,
                    epoch_loss: tuple[float, int] = (0.0, 0)) -> None:
    """epoch_loss: (sum, steps) of the current epoch's training loss so far (under torchrun, the mean of
    the processes' sums), so a resumed epoch logs its mean over every step."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "history": history,
             "identity": identity, "epoch_loss": list(epoch_loss)}
    atomic_save(path, lambda temp: torch.save(state, temp))


def check_settings(train_cfg: DictConfig) -> None:
    """One-line errors naming a bad `predictor.train` value, before anything is read or written."""
    prefix = "predictor.train"
    check_ints(train_cfg, prefix, ("epochs", "batch_size", "rollout_steps", "val_windows", "checkpoint_every"))
    check_ints(train_cfg, prefix, ("steps_per_epoch",), nullable=True, null_means="one pass over the windows")
    check_numbers(train_cfg, prefix, ("lr", "grad_clip"), positive=True)
    check_numbers(train_cfg, prefix, ("min_lr", "weight_decay", "warmup_steps"))
    if train_cfg.loss not in ("l1", "l2"):
        raise ValueError(f"predictor.train.loss={train_cfg.loss!r} is invalid; expected l1 or l2")


def main(cfg: DictConfig) -> None:
    """`jepa-agent train`: fit the predictor on `cfg.paths.latents`, write it to `cfg.paths.predictor`.
    Under torchrun, data parallel over the processes (see `world_model.distributed`)."""
    check_settings(cfg.predictor.train)
    processes = distributed.start(cfg.device)
    try:
        train(cfg, processes)
    finally:
        processes.close()


def train(cfg: DictConfig, processes: distributed.Processes) -> None:
    train_cfg, device = cfg.predictor.train, processes.device
    if train_cfg.batch_size % processes.world_size:
        raise ValueError(f"predictor.train.batch_size={train_cfg.batch_size} is not divisible by the "
                         f"{processes.world_size} torchrun processes")
    fingerprint = load_stage_encoder(cfg).fingerprint
    train_cache = LatentCache(Path(cfg.paths.latents) / "train", fingerprint)
    val_cache = LatentCache(Path(cfg.paths.latents) / "val", fingerprint)
    if train_cache.manifest["task"] != cfg.env.name:
        raise ValueError(f"the latent cache {str(train_cache.split_dir)!r} holds task "
                         f"{train_cache.manifest['task']!r}, but env.name={cfg.env.name!r}; "
                         "pass the matching env= or another paths.latents")
    if int(cfg.predictor.readout.steps) > 0:  # the readout reads hinge joints as (sin, cos): known before training
        angles = recorded_angular_positions(train_cache.manifest["dataset_meta"],
                                            f"the dataset of latent cache {str(train_cache.split_dir)!r}")
    torch.manual_seed(cfg.seed)
    model = Predictor(predictor_config(cfg.predictor, train_cache)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    output_dir = ensure_writable_dir(cfg.paths.predictor, "predictor directory")
    checkpoint_path = output_dir / "checkpoints" / "last.pt"
    step, history, epoch_loss, epoch_steps = 0, [], 0.0, 0
    identity = run_identity(cfg, model, train_cache)
    state = resumable_state(checkpoint_path, identity, cfg, device)
    processes.barrier()  # every process has read the checkpoint before it may go
    if state is None and processes.is_main:  # what is left belongs to another run: gone, as config.yaml changes
        for stale in OUTPUTS:
            (output_dir / stale).unlink(missing_ok=True)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        epoch_loss, epoch_steps = state["epoch_loss"]
        print(f"resuming from {checkpoint_path} at step {step}")
    else:
        fit_normalisation(model, train_cache, cfg.seed)
    window_frames = model.config.context_frames + train_cfg.rollout_steps
    train_data = WindowData(train_cache, model, window_frames)
    val_data = WindowData(val_cache, model, window_frames)
    val_windows = val_data.windows[torch.randperm(len(val_data.windows),
                                                  generator=torch.Generator().manual_seed(cfg.seed))]
    val_windows = val_windows[: train_cfg.val_windows]
    steps_per_epoch = len(train_data.windows) // train_cfg.batch_size
    if train_cfg.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, train_cfg.steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_data.windows)} training windows are fewer than one batch of "
                         f"predictor.train.batch_size={train_cfg.batch_size}")
    total_steps = train_cfg.epochs * steps_per_epoch
    if processes.is_main:
        atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    objective = processes.wrap(WindowObjective(model, train_cfg.rollout_steps, train_cfg.loss))
    if processes.distributed and processes.is_main:
        print(f"data parallel: {processes.world_size} processes, {train_cfg.batch_size // processes.world_size} "
              f"windows each per step")
    model.train()
    events = EventLog(output_dir, resumed_step=step) if processes.is_main else None  # rank 0's share of each batch
    progress = tqdm(total=total_steps, initial=step, unit="step", desc="train predictor", dynamic_ncols=True,
                    disable=not processes.is_main)
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        epoch_generator = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        order = torch.randperm(len(train_data.windows), generator=epoch_generator)
        if step_in_epoch == 0:
            epoch_loss, epoch_steps = 0.0, 0  # this process's training loss summed over the epoch's steps
        for index in range(step_in_epoch, steps_per_epoch):
            windows = train_data.windows[order[index * train_cfg.batch_size : (index + 1) * train_cfg.batch_size]]
            windows = processes.shard(windows)  # (batch_size / processes, 2)
            set_learning_rate(optimizer, learning_rate(step, total_steps, train_cfg.lr, train_cfg.min_lr,
                                                       train_cfg.warmup_steps))
            with bf16_autocast(device, train_cfg.bf16):
                losses = objective(*train_data.batch(windows, device))
            loss_value = losses["loss"].item()
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"non-finite training loss ({loss_value}) at step {step}; the last good checkpoint "
                    f"{checkpoint_path} is kept; try a lower predictor.train.lr (now {train_cfg.lr})")
            epoch_loss, epoch_steps = epoch_loss + loss_value, epoch_steps + 1
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            step += 1
            if events is not None:
                values = torch.stack([value.detach().float() for value in losses.values()]).tolist()  # one sync
                events.scalars(step, {"train/lr": optimizer.param_groups[0]["lr"],
                                      **{f"train/{name}": value for name, value in zip(losses, values)}})
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}", teacher_forcing=f"{losses['teacher_forcing'].item():.4f}",
                                 copy_last=f"{losses['copy_last'].item():.4f}")
            if step % train_cfg.checkpoint_every == 0 and step % steps_per_epoch:
                partial_loss = processes.mean(epoch_loss)  # every process calls it; the same step count on each
                if processes.is_main:
                    events.flush()  # first: a checkpoint on disk has its curves on disk
                    save_checkpoint(checkpoint_path, model, optimizer, step, history, identity,
                                    (partial_loss, epoch_steps))
        train_loss = processes.mean(epoch_loss / max(epoch_steps, 1))  # the epoch's mean over every process
        if processes.is_main:  # in a torchrun job only rank 0 validates, on the unwrapped model
            val = held_out_losses(window_losses, model, val_data, val_windows, train_cfg, device)
            history.append({"epoch": epoch + 1, "step": step, "train_loss": train_loss,
                            **{f"val_{name}": value for name, value in val.items()}})
            progress.write(f"epoch {epoch + 1}: train {train_loss:.4f}  val {val['loss']:.4f}: latent teacher "
                           f"forcing {val['teacher_forcing']:.4f} (copy-last {val['copy_last']:.4f}), latent rollout "
                           f"{val['rollout']:.4f}, proprio {val['proprio']:.4f}")
            events.scalars(step, {"epoch/train_loss": train_loss,
                                  **{f"val/{name}": value for name, value in val.items()}})
            events.flush()
            save_checkpoint(checkpoint_path, model, optimizer, step, history, identity)
        processes.barrier()
    progress.close()
    if not processes.is_main:
        return
    events.close()
    meta = {"task": train_cache.manifest["task"], "action_dim": train_cache.action_dim,
            "block": model.config.block, "latent_grid": model.config.pool_grid, "latent_dim": model.config.output_dim,
            "cache_grid": train_cache.grid, "cache_dim": train_cache.dim, "encoder_fingerprint": fingerprint,
            "context_frames": model.config.context_frames, "loss": train_cfg.loss, "steps": step,
            "val_loss": history[-1]["val_loss"] if history else None}
    save_predictor(model, output_dir, meta)
    fit_reference(model, train_cache, val_cache, output_dir, cfg.seed)  # for the agent's unfamiliar-frame warning
    atomic_write_json(output_dir / "history.json", history)
    print(f"predictor: {output_dir / 'predictor.safetensors'} (val loss {meta['val_loss']})")
    if int(cfg.predictor.readout.steps) > 0:  # the goal's qpos from its tokens, for evaluate.energy.position_weight
        train_position_readout(cfg.predictor.readout, train_cache, val_cache, output_dir, cfg.seed, fingerprint, angles)
    if int(cfg.predictor.latent_readout.steps) > 0:  # chosen qpos from predicted latents: latent_readout_weight
        train_latent_readout(cfg.predictor.latent_readout, model, train_cache, val_cache, output_dir, cfg.seed)
