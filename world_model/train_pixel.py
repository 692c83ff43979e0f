"""Pixel world model training (`jepa-agent run world_model=pixel`, stage `train_pixel`) on the dataset's frames.

The same windows as the latent predictor's (world_model/train_predictor.py): episode e, start t, frames t,
t + block, ..., t + block * (C + R - 1), C = `pixel.context_frames`, R = `pixel.train.rollout_steps`;
teacher forcing over the first C frames, then the prediction of frame C fed back for R - 1 more (as a
planning rollout goes on). The loss is the pixel distance (`pixel.train.loss`: l2 | l1, mean over pixels
and channels of frames in [-0.5, 0.5]); `copy_last` is what copying each frame to the next scores on the
same targets. Frames are area-downsampled from the env's `image_size` to `pixel.resolution` once, in memory.

`pixel.train.time_budget_s` (null: none) caps the training wall time, for a comparison at the same budget as
the latent pipeline's pretrain + embed + train: the learning rate follows warmup then cosine decay over
whichever of the steps and the time runs out first, and training stops there (then the result depends on
the machine's speed; `meta.json` records the steps it made). A rerun resumes from `checkpoints/last.pt`
(which keeps the time spent) when the identity (model, training settings, seed, the training split's
manifest) is the same, and refuses another unless run.overwrite=true. Outputs in `cfg.paths.pixel_model`:
`pixel_model.safetensors`, `meta.json` (incl. the parameter count), `history.json`, `config.yaml`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bookkeeping.checks import check_ints, check_numbers
from bookkeeping.identity import config_identity
from bookkeeping.io import (atomic_save, atomic_write_json, atomic_write_text, ensure_writable_dir, may_resume,
                            read_checkpoint)
from envs.dataset import EpisodeStore, read_manifest
from world_model.device import bf16_autocast
from world_model.energy import FRAME_NORMS
from world_model.fitting import held_out_losses
from world_model.pixel_model import (PixelModelConfig, PixelWorldModel, parameter_count, save_pixel_model,
                                     to_model_frames)
from world_model.schedules import learning_rate, set_learning_rate

LOSSES = ("l2", "l1")
OUTPUTS = ("checkpoints/last.pt", "pixel_model.safetensors", "meta.json", "history.json")


def downsample(images: np.ndarray | torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> uint8 (..., 3, r, r), area-averaged (S a multiple of r)."""
    images = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images  # a copy: writable
    size = images.shape[-2]
    if size % resolution:
        raise ValueError(f"pixel.resolution={resolution} is invalid for {size} px frames; expected a divisor of {size}")
    frames = images.movedim(-1, -3)  # (..., 3, S, S)
    if size != resolution:
        flat = F.avg_pool2d(frames.reshape(-1, 3, size, size).float(), size // resolution)
        frames = flat.round().to(torch.uint8).view(*frames.shape[:-2], resolution, resolution)
    return frames.contiguous()


def model_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, r, r) -> float in [-0.5, 0.5] (the model's frames)."""
    return to_model_frames(frames.movedim(-3, -1))


def pixel_distance(predicted: torch.Tensor, target: torch.Tensor, norm: str) -> torch.Tensor:
    """Mean over pixels and channels: (..., 3, r, r) -> (...)."""
    difference = predicted.float() - target.float()
    return (difference.square() if norm == "l2" else difference.abs()).mean(dim=(-3, -2, -1))


class FrameWindows:
    """A dataset split's frames (downsampled, uint8, in memory), actions and training windows."""

    def __init__(self, store: EpisodeStore, resolution: int, block: int, window_frames: int):
        span = block * (window_frames - 1)
        if span > store.episode_length:
            raise ValueError(f"episodes of {store.episode_length} steps are shorter than a window of {window_frames} "
                             f"frames x block {block}")
        self.block, self.window_frames = block, window_frames
        self.frames = torch.stack([downsample(store.episode(i)["frames"], resolution) for i in range(len(store))])
        self.actions = torch.from_numpy(np.array(store.array("actions"), dtype=np.float32))  # (E, T, A)
        starts = store.episode_length - span + 1
        episodes, offsets = torch.meshgrid(torch.arange(len(store)), torch.arange(starts), indexing="ij")
        self.windows = torch.stack([episodes.flatten(), offsets.flatten()], dim=1)  # (W, 2)

    def batch(self, windows: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """windows (B, 2) -> frames (B, F, 3, r, r) float, action blocks (B, F-1, block*A)."""
        episodes, starts = windows[:, :1], windows[:, 1:]
        frame_index = starts + self.block * torch.arange(self.window_frames)  # (B, F)
        action_index = starts + torch.arange(self.block * (self.window_frames - 1))  # (B, block*(F-1))
        frames = model_frames(self.frames[episodes, frame_index])  # (B, F, 3, r, r)
        actions = self.actions[episodes, action_index].flatten(1).view(len(windows), self.window_frames - 1, -1)
        return frames.to(device), actions.to(device)


def window_losses(model: PixelWorldModel, frames, actions, rollout_steps: int, norm: str) -> dict:
    """Scalar losses of a batch of windows: `loss` = teacher forcing + rollout, and copy-last."""
    context = model.config.context_frames
    predicted, caches = model.advance(frames[:, :context], actions[:, :context], None, 0)  # frames 1..C
    teacher_forcing = pixel_distance(predicted, frames[:, 1 : context + 1], norm).mean()
    rollout = torch.zeros((), device=frames.device)
    if rollout_steps > 1:
        rolled = model.roll_on(predicted[:, -1:], caches, actions[:, context : context + rollout_steps - 1])
        rollout = pixel_distance(rolled, frames[:, context + 1 :], norm).mean()
    copy_last = pixel_distance(frames[:, :context], frames[:, 1 : context + 1], norm).mean()
    return {"loss": teacher_forcing + rollout, "teacher_forcing": teacher_forcing, "rollout": rollout,
            "copy_last": copy_last}


def model_config(cfg: DictConfig, action_dim: int) -> PixelModelConfig:
    pixel = cfg.pixel
    return PixelModelConfig(image_size=int(pixel.resolution or cfg.env.image_size), action_dim=action_dim,
                            block=int(pixel.block), channels=tuple(pixel.channels), width=int(pixel.width),
                            depth=int(pixel.depth), heads=int(pixel.heads), mlp_ratio=float(pixel.mlp_ratio),
                            context_frames=int(pixel.context_frames), condition_width=int(pixel.condition_width))


def check_settings(cfg: DictConfig) -> None:
    """One-line errors naming a bad `pixel` value, before anything is read or written."""
    check_ints(cfg.pixel, "pixel", ("block", "width", "depth", "heads", "context_frames", "condition_width"))
    check_ints(cfg.pixel, "pixel", ("resolution",), nullable=True, null_means="the env's image_size")
    check_ints(cfg.pixel.train, "pixel.train", ("epochs", "batch_size", "rollout_steps", "val_windows",
                                                "checkpoint_every"))
    check_numbers(cfg.pixel.train, "pixel.train", ("lr",), positive=True)
    check_numbers(cfg.pixel.train, "pixel.train", ("min_lr", "weight_decay", "warmup_steps"))
    budget = cfg.pixel.train.time_budget_s
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise ValueError(f"pixel.train.time_budget_s={budget!r} is invalid; expected a positive number or null")
    if cfg.pixel.train.loss not in LOSSES:
        raise ValueError(f"pixel.train.loss={cfg.pixel.train.loss!r} is invalid; expected one of {list(LOSSES)}")
    if cfg.pixel.energy not in FRAME_NORMS:
        raise ValueError(f"pixel.energy={cfg.pixel.energy!r} is invalid; expected one of {list(FRAME_NORMS)}")
    resolution = cfg.pixel.resolution or cfg.env.image_size
    if cfg.env.image_size % resolution:
        raise ValueError(f"pixel.resolution={resolution} is invalid for env.image_size={cfg.env.image_size}; "
                         "expected a divisor of it (frames are area-downsampled)")
    model_config(cfg, action_dim=1)  # the channels must fit the resolution: one halving per conv
    if cfg.pixel.width % cfg.pixel.heads:
        raise ValueError(f"pixel.width={cfg.pixel.width} is invalid; expected a multiple of "
                         f"pixel.heads={cfg.pixel.heads}")


def main(cfg: DictConfig) -> None:
    """Train the pixel model on `cfg.paths.dataset`, write it to `cfg.paths.pixel_model`."""
    from world_model.device import resolve_device

    check_settings(cfg)
    train_cfg, device = cfg.pixel.train, torch.device(resolve_device(cfg.device))
    train_store, val_store = (EpisodeStore(Path(cfg.paths.dataset) / split) for split in ("train", "val"))
    if train_store.meta.get("task") != cfg.env.name:
        raise ValueError(f"the dataset {str(train_store.split_dir)!r} holds task {train_store.meta.get('task')!r}, "
                         f"but env.name={cfg.env.name!r}; pass the matching env= or another paths.dataset")
    torch.manual_seed(cfg.seed)
    model = PixelWorldModel(model_config(cfg, int(train_store.meta["action_dim"]))).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    output_dir = ensure_writable_dir(cfg.paths.pixel_model, "pixel model directory")
    checkpoint_path = output_dir / "checkpoints" / "last.pt"
    identity = config_identity(cfg, ("seed", "pixel.train"), model=dataclasses.asdict(model.config),
                               dataset=read_manifest(train_store.split_dir))
    step, history, elapsed = 0, [], 0.0
    state = read_checkpoint(checkpoint_path, device, "pixel model checkpoint", bool(cfg.run.overwrite)) \
        if checkpoint_path.exists() else None
    if state is not None and may_resume("pixel model checkpoint", checkpoint_path, state.get("identity", {}), identity,
                                        bool(cfg.run.overwrite)):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, history, elapsed = state["step"], state["history"], state["elapsed_s"]
        print(f"resuming from {checkpoint_path} at step {step} ({elapsed:.0f} s trained)")
    else:
        for stale in OUTPUTS:
            (output_dir / stale).unlink(missing_ok=True)
    window_frames = model.config.context_frames + train_cfg.rollout_steps
    train_data = FrameWindows(train_store, model.config.image_size, model.config.block, window_frames)
    val_data = FrameWindows(val_store, model.config.image_size, model.config.block, window_frames)
    val_windows = val_data.windows[torch.randperm(len(val_data.windows), generator=torch.Generator().manual_seed(
        cfg.seed))][: train_cfg.val_windows]
    steps_per_epoch = len(train_data.windows) // train_cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_data.windows)} training windows are fewer than one batch of "
                         f"pixel.train.batch_size={train_cfg.batch_size}")
    total_steps, budget = train_cfg.epochs * steps_per_epoch, train_cfg.time_budget_s
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    def save_checkpoint() -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "history": history,
                 "identity": identity, "elapsed_s": elapsed}
        atomic_save(checkpoint_path, lambda temp: torch.save(state, temp))

    def out_of_time() -> bool:
        return budget is not None and elapsed >= budget

    print(f"pixel model: {parameter_count(model):,} parameters, {model.config.image_size} px frames")
    model.train()
    progress = tqdm(total=total_steps, initial=step, unit="step", desc="train pixel model", dynamic_ncols=True)
    while step < total_steps and not out_of_time():
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        shuffle = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        order = torch.randperm(len(train_data.windows), generator=shuffle)
        for index in range(step_in_epoch, steps_per_epoch):
            started = time.perf_counter()
            windows = train_data.windows[order[index * train_cfg.batch_size : (index + 1) * train_cfg.batch_size]]
            fraction = max(step / total_steps, elapsed / budget if budget else 0.0)
            set_learning_rate(optimizer, learning_rate(step, total_steps, train_cfg.lr, train_cfg.min_lr,
                                                       train_cfg.warmup_steps, progress=fraction))
            with bf16_autocast(device, train_cfg.bf16):
                losses = window_losses(model, *train_data.batch(windows, device), train_cfg.rollout_steps,
                                       train_cfg.loss)
            if not math.isfinite(losses["loss"].item()):
                raise ValueError(f"non-finite pixel training loss at step {step}; the last good checkpoint "
                                 f"{checkpoint_path} is kept; try a lower pixel.train.lr (now {train_cfg.lr})")
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            step, elapsed = step + 1, elapsed + time.perf_counter() - started
            progress.update(1)
            progress.set_postfix(loss=f"{losses['loss'].item():.5f}", copy_last=f"{losses['copy_last'].item():.5f}")
            if step % train_cfg.checkpoint_every == 0:
                save_checkpoint()
            if out_of_time():
                break
        val = held_out_losses(window_losses, model, val_data, val_windows, train_cfg, device)
        history.append({"epoch": epoch + 1, "step": step, "elapsed_s": elapsed,
                        **{f"val_{k}": v for k, v in val.items()}})
        progress.write(f"epoch {epoch + 1} (step {step}, {elapsed:.0f} s): val teacher forcing "
                       f"{val['teacher_forcing']:.5f} (copy-last {val['copy_last']:.5f}), rollout {val['rollout']:.5f}")
        save_checkpoint()
    progress.close()
    meta = {"task": train_store.meta["task"], "action_dim": model.config.action_dim, "env_image_size":
            int(cfg.env.image_size), "parameters": parameter_count(model), "steps": step, "train_wall_time_s": elapsed,
            "stopped_by": "time_budget_s" if out_of_time() and step < total_steps else "epochs",
            "val": {k[4:]: v for k, v in history[-1].items() if k.startswith("val_")} if history else None}
    save_pixel_model(model, output_dir, meta)
    atomic_write_json(output_dir / "history.json", history)
    print(f"pixel model: {output_dir / 'pixel_model.safetensors'} ({step} steps in {elapsed:.0f} s)")
