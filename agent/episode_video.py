"""Rollout videos: the agent's camera beside the goal image, with a line of text per frame."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from envs.video import upscale, write_mp4

SCALE = 4          # 64 px frames become 256 px panels
TEXT_HEIGHT = 28


def compose_frame(observation: np.ndarray, goal: np.ndarray, caption: str) -> np.ndarray:
    """[observation | goal] upscaled, with `caption` below: uint8 (H*s + text, 2*W*s + gap, 3)."""
    gap = np.full((observation.shape[0] * SCALE, 4, 3), 255, dtype=np.uint8)
    panels = np.concatenate([upscale(observation, SCALE), gap, upscale(goal, SCALE)], axis=1)
    canvas = Image.new("RGB", (panels.shape[1], panels.shape[0] + TEXT_HEIGHT), "black")
    canvas.paste(Image.fromarray(panels), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, panels.shape[0] + 4), caption, fill="white")
    draw.text((4, 2), "agent", fill="white")
    draw.text((panels.shape[1] // 2 + 6, 2), "goal", fill="white")
    return np.asarray(canvas)


def write_episode_video(path: str | Path, observations: np.ndarray, goal: np.ndarray,
                        captions: list[str], fps: int = 10) -> Path:
    """observations (T, H, W, 3), goal (H, W, 3), one caption per observation -> MP4 at `path`."""
    frames = np.stack([compose_frame(frame, goal, caption) for frame, caption in zip(observations, captions)])
    return write_mp4(path, frames, fps=fps)
