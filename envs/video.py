"""MP4 writing (headless, imageio + ffmpeg), crash-safe: encoded to a temp file, then renamed."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bookkeeping.io import atomic_save


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, 3) frames by an integer factor."""
    if factor <= 1:
        return frames
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 10) -> Path:
    """Write uint8 frames (T, H, W, 3) as H.264 MP4 (H and W are padded to even sizes)."""
    import imageio.v2 as imageio

    frames = np.asarray(frames, dtype=np.uint8)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))

    def save(temp: Path) -> None:
        with imageio.get_writer(temp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                macro_block_size=1, ffmpeg_log_level="error") as writer:
            for frame in frames:
                writer.append_data(frame)

    return atomic_save(path, save)
