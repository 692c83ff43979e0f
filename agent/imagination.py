"""What the pixel world model imagines (`jepa-agent imagine world_model=pixel`, a stage of `run` with it).

On the held-out `eval` split, with the true actions and no correction from observations (open loop):
    imagination/episode{i}.mp4    [real | imagined] frame by frame over a whole episode, from its first
                                  `context_frames` frames: the blur and the drift, for a person to see
    imagination/rollout_error.json  per horizon 1..`pixel.imagination.horizon` blocks, over up to
                                  `pixel.imagination.windows` windows: the mean squared pixel error of the
                                  model (frames in [-0.5, 0.5] at the model's resolution) and of copying the
                                  last context frame, and their ratio (< 1: the model beats copy-last);
                                  `random_action_mse`: between the predictions for the true and for random
                                  actions (next to model_mse, ~0: the model ignores the actions)
Recomputed on every call (a measurement, like `diagnose`); the files are written whole, then renamed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from bookkeeping.checks import check_ints
from bookkeeping.io import atomic_write_json
from envs.dataset import EpisodeStore
from envs.video import upscale, write_mp4
from world_model.pixel_model import load_pixel_model, to_images
from world_model.train_pixel import downsample, model_frames, pixel_distance

PANEL = 192  # px: each side of the video is upscaled to about this


def labelled_pair(real: np.ndarray, imagined: np.ndarray, caption: str) -> np.ndarray:
    """uint8 (r, r, 3) twice -> [real | imagined] upscaled, titled, with `caption` below."""
    factor = max(1, PANEL // real.shape[0])
    gap = np.full((real.shape[0] * factor, 4, 3), 255, dtype=np.uint8)
    panels = np.concatenate([upscale(real, factor), gap, upscale(imagined, factor)], axis=1)
    canvas = Image.new("RGB", (panels.shape[1], panels.shape[0] + 24), "black")
    canvas.paste(Image.fromarray(panels), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), "real", fill="white")
    draw.text((panels.shape[1] // 2 + 6, 2), "imagined", fill="white")
    draw.text((4, panels.shape[0] + 4), caption, fill="white")
    return np.asarray(canvas)


def episode_blocks(episode: dict, block: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An episode's frames every `block` steps (F, 3, r, r) as model frames, and its action blocks (F-1, block*A)."""
    count = (len(episode["actions"]) // block) + 1
    frames = model_frames(downsample(episode["frames"][: block * (count - 1) + 1 : block], resolution))
    actions = torch.from_numpy(np.array(episode["actions"][: block * (count - 1)], dtype=np.float32))
    return frames, actions.view(count - 1, -1)


@torch.no_grad()
def imagine_episode(model, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Open loop from the first C frames (C, 3, r, r) with the true action blocks -> the imagined later frames."""
    context = model.config.context_frames
    return model.rollout(frames[None, :context], actions[None, context - 1 :], actions[None, : context - 1])[0]


@torch.no_grad()
def rollout_error(model, store: EpisodeStore, horizon: int, windows: int, seed: int, chunk: int = 64) -> dict:
    """Model vs copy-last mean squared error per horizon over eval windows (module docstring), `chunk`
    windows per model call."""
    config = model.config
    horizon = min(horizon, store.episode_length // config.block - config.context_frames + 1)  # what episodes hold
    span = config.block * (config.context_frames - 1 + horizon)
    if horizon < 1:
        raise ValueError(f"episodes of {store.episode_length} steps are too short for {config.context_frames} context "
                         f"frames and a block of {config.block} steps")
    starts = [(e, t) for e in range(len(store)) for t in range(store.episode_length - span + 1)]
    chosen = sorted(starts[i] for i in np.random.default_rng(seed).permutation(len(starts))[:windows])
    window_frames, window_blocks, loaded = [], [], {}
    for episode_index, start in chosen:
        if episode_index not in loaded:
            episode = store.episode(episode_index)
            loaded = {episode_index: (downsample(episode["frames"], config.image_size),  # (T+1, 3, r, r) uint8
                                      torch.from_numpy(np.array(episode["actions"], dtype=np.float32)))}  # (T, A)
        frames, actions = loaded[episode_index]
        window_frames.append(frames[start + config.block * np.arange(config.context_frames + horizon)])
        window_blocks.append(actions[start : start + span].reshape(-1, config.block * actions.shape[-1]))
    frames = model_frames(torch.stack(window_frames))  # (W, C+H, 3, r, r)
    blocks = torch.stack(window_blocks)  # (W, C-1+H, block*A)
    context = config.context_frames
    random_blocks = torch.rand(blocks[:, context - 1 :].shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1

    def imagined(planned: torch.Tensor) -> torch.Tensor:  # planned (W, H, block*A) -> (W, H, 3, r, r)
        return torch.cat([model.rollout(frames[rows, :context], planned[rows], blocks[rows, : context - 1])
                          for rows in torch.arange(len(frames)).split(chunk)])

    predicted = imagined(blocks[:, context - 1 :])
    truth = frames[:, context:]  # (W, H, 3, r, r)
    model_error = pixel_distance(predicted, truth, "l2").mean(0)  # (H,)
    copy_error = pixel_distance(frames[:, context - 1 : context].expand_as(truth), truth, "l2").mean(0)  # (H,)
    # how much the actions move the prediction: next to model_mse, ~0 says the planner has nothing to choose between
    action_effect = pixel_distance(predicted, imagined(random_blocks), "l2").mean(0)  # (H,)
    return {"horizon_blocks": list(range(1, horizon + 1)), "model_mse": model_error.tolist(),
            "copy_last_mse": copy_error.tolist(), "ratio": (model_error / copy_error.clamp_min(1e-12)).tolist(),
            "random_action_mse": action_effect.tolist(),
            "windows": len(chosen), "resolution": config.image_size, "split": "eval"}


def main(cfg: DictConfig) -> dict:
    from world_model.device import resolve_device

    if cfg.get("pixel") is None:
        raise ValueError("imagine shows the pixel world model; pass world_model=pixel")
    check_ints(cfg.pixel.imagination, "pixel.imagination", ("episodes", "windows", "horizon"), minimum=0)
    model, _ = load_pixel_model(cfg.paths.pixel_model, resolve_device(cfg.device))
    model = model.cpu()  # small batches: one episode at a time
    store = EpisodeStore(Path(cfg.paths.dataset) / "eval")
    out_dir = Path(cfg.paths.pixel_model) / "imagination"
    block, context = model.config.block, model.config.context_frames
    for index in range(min(int(cfg.pixel.imagination.episodes), len(store))):
        frames, actions = episode_blocks(store.episode(index), block, model.config.image_size)
        imagined = imagine_episode(model, frames, actions)  # (F - C, 3, r, r)
        real_images, imagined_images = to_images(frames).numpy(), to_images(imagined).numpy()
        video = [labelled_pair(real_images[i], real_images[i], f"block {i}: context (observed)")
                 for i in range(context)]
        video += [labelled_pair(real_images[context + i], imagined_images[i], f"block {context + i}: imagined "
                                f"{i + 1} block(s) ahead") for i in range(len(imagined_images))]
        write_mp4(out_dir / f"episode{index}.mp4", np.stack(video), fps=4)
    errors = {}
    if int(cfg.pixel.imagination.windows) > 0 and int(cfg.pixel.imagination.horizon) > 0:
        errors = rollout_error(model, store, int(cfg.pixel.imagination.horizon), int(cfg.pixel.imagination.windows),
                               int(cfg.seed))
        ratios = ", ".join(f"{ratio:.2f}" for ratio in errors["ratio"])
        print(f"pixel rollout error / copy-last over {errors['windows']} eval windows, by horizon: {ratios}")
    atomic_write_json(out_dir / "rollout_error.json", errors)
    print(f"imagination: {out_dir}")
    return errors
