"""One V-JEPA pretraining run in memory: settings, optimiser, schedules, masks, steps, checkpoints.

The stage (`world_model.vjepa.pretrain.main`) owns files and the loop; this class owns the state.
A checkpoint holds every tensor needed to continue bit-for-bit: both encoders, the predictor, the
optimiser moments, the step, and the random generator that draws clips and masks, plus the run's
identity (`run_identity`); a checkpoint of another identity is not resumed. It is written with
`torch.save` to a temporary name then renamed, and read with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import VJEPA2Config

from bookkeeping.identity import config_identity
from bookkeeping.io import atomic_save, may_resume, read_checkpoint
from world_model.device import bf16_autocast
from world_model.encoder import preprocess_frames
from world_model.vjepa.clips import ClipSampler, random_resized_crop
from world_model.vjepa.masking import BlockMaskSpec, MultiBlockMasker
from world_model.vjepa.model import VJEPAPretrainingModel
from world_model.schedules import ema_momentum, learning_rate, set_learning_rate
from world_model.vjepa.statistics import representation_statistics



@dataclass(frozen=True)
class PretrainSettings:
    """`encoder.pretrain` of the config; configs/encoder/vjepa_tiny.yaml holds the values and their
    meaning (no defaults here: the YAML is the one source)."""

    steps: int
    batch_size: int
    clip_frames: int
    lr: float
    start_lr: float
    final_lr: float
    warmup_steps: int
    weight_decay: float
    ema_start: float
    ema_end: float
    masks: list[dict]
    min_context: int
    variance_weight: float
    covariance_weight: float
    target_layers: int
    static_fraction: float
    crop_scale: tuple[float, float]
    crop_aspect_ratio: tuple[float, float]
    autocast_bf16: bool
    checkpoint_every: int
    log_every: int
    val_every: int
    val_clips: int

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "PretrainSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(values) - known), sorted(known - set(values))
        if unknown or missing:
            raise ValueError(f"encoder.pretrain has unknown keys {unknown} and lacks keys {missing}; expected "
                             f"exactly {sorted(known)}")
        settings = cls(**values)
        if settings.steps < 1 or settings.batch_size < 1 or settings.warmup_steps < 0:
            raise ValueError(f"encoder.pretrain needs steps >= 1, batch_size >= 1, warmup_steps >= 0, got "
                             f"{settings.steps}, {settings.batch_size}, {settings.warmup_steps}")
        if not 0 <= settings.ema_start <= settings.ema_end <= 1:
            raise ValueError(f"encoder.pretrain needs 0 <= ema_start <= ema_end <= 1, got "
                             f"{settings.ema_start}, {settings.ema_end}")
        if settings.variance_weight < 0 or settings.covariance_weight < 0:
            raise ValueError(f"encoder.pretrain needs variance_weight >= 0 and covariance_weight >= 0, got "
                             f"{settings.variance_weight}, {settings.covariance_weight}")
        if not 0 <= settings.static_fraction <= 1:
            raise ValueError(f"encoder.pretrain needs 0 <= static_fraction <= 1, got {settings.static_fraction}")
        for name in ("crop_scale", "crop_aspect_ratio"):
            value = getattr(settings, name)
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f"encoder.pretrain.{name} must be a pair [low, high], got {value!r}")
        (low, high), (narrowest, widest) = settings.crop_scale, settings.crop_aspect_ratio
        if not 0 < low <= high <= 1:
            raise ValueError(f"encoder.pretrain needs 0 < crop_scale[0] <= crop_scale[1] <= 1, "
                             f"got {list(settings.crop_scale)}")
        if not 0 < narrowest <= widest:
            raise ValueError(f"encoder.pretrain needs 0 < crop_aspect_ratio[0] <= crop_aspect_ratio[1], "
                             f"got {list(settings.crop_aspect_ratio)}")
        return settings

    def mask_specs(self) -> list[BlockMaskSpec]:
        return [BlockMaskSpec(mask["num_blocks"], tuple(mask["spatial_scale"]),
                              tuple(mask.get("aspect_ratio", (0.75, 1.5)))) for mask in self.masks]


def build_config(architecture: dict[str, Any], clip_frames: int) -> VJEPA2Config:
    """VJEPA2Config from `encoder.architecture`, pretrained on clips of `clip_frames` frames."""
    config = VJEPA2Config(**{**architecture, "frames_per_clip": clip_frames})
    if config.crop_size % config.patch_size or clip_frames % config.tubelet_size:
        raise ValueError(f"crop_size {config.crop_size} must be a multiple of patch_size {config.patch_size} "
                         f"and clip_frames {clip_frames} a multiple of tubelet_size {config.tubelet_size}")
    return config


def run_identity(architecture: dict, settings: PretrainSettings, seed: int, data: dict) -> dict:
    """What a pretraining run's weights depend on: the architecture (`encoder.architecture`), the
    settings but for how often it logs and saves, the seed, and `data` (what identifies the training
    episodes). JSON-normalised."""
    values = {"architecture": architecture, "pretrain": dataclasses.asdict(settings), "seed": seed}
    return config_identity(values, ("architecture", "pretrain", "seed"), data=data)


class Pretrainer:
    """Context encoder + predictor trained by AdamW on L1 in representation space, EMA target, for the
    `encoder.architecture` fields `architecture`. `data` identifies the training episodes in
    checkpoints (their dataset's metadata and count)."""

    def __init__(self, architecture: dict[str, Any], settings: PretrainSettings, train_clips: ClipSampler,
                 device: torch.device, seed: int = 0, data: dict | None = None):
        self.config = config = build_config(architecture, settings.clip_frames)
        self.settings = settings
        self.train_clips = train_clips
        self.device = device
        self.identity = run_identity(architecture, settings, seed, data or {})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = VJEPAPretrainingModel(config, settings.variance_weight, settings.covariance_weight,
                                               settings.target_layers).to(device)
        self.optimizer = torch.optim.AdamW(self.model.trainable_parameter_groups(settings.weight_decay),
                                           lr=settings.start_lr, betas=(0.9, 0.999))
        grid = (config.crop_size // config.patch_size,) * 2
        tubelets = settings.clip_frames // config.tubelet_size
        self.maskers = [MultiBlockMasker(spec, grid, tubelets, settings.min_context)
                        for spec in settings.mask_specs()]
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0
        self.train_seconds = 0.0

    def _autocast(self):
        return bf16_autocast(self.device, self.settings.autocast_bf16)

    def _masks(self, batch_size: int, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [tuple(ids.to(self.device) for ids in masker(batch_size, generator)) for masker in self.maskers]

    def train_step(self) -> dict[str, float]:
        """One optimiser step and EMA update; returns loss, lr and momentum of this step."""
        settings = self.settings
        lr = learning_rate(self.step, settings.steps, settings.lr, settings.final_lr, settings.warmup_steps,
                           settings.start_lr)
        momentum = ema_momentum(self.step, settings.steps, settings.ema_start, settings.ema_end)
        set_learning_rate(self.optimizer, lr)
        clips = self.train_clips.sample(settings.batch_size, self.generator).to(self.device)  # (B, F, H, W, 3)
        pixels = preprocess_frames(clips, self.config.crop_size)  # (B, F, 3, S, S)
        if tuple(settings.crop_scale) != (1.0, 1.0):  # draws nothing otherwise: earlier runs reproduce
            pixels = random_resized_crop(pixels, settings.crop_scale, settings.crop_aspect_ratio, self.generator)
        masks = self._masks(settings.batch_size, self.generator)
        self.model.train()
        with self._autocast():
            loss, _ = self.model.loss(pixels, masks)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.model.update_target(momentum)
        self.step += 1
        return {"loss": loss.item(), "lr": lr, "momentum": momentum}

    @torch.no_grad()
    def evaluate(self, clips: torch.Tensor, seed: int = 0) -> dict[str, float]:
        """Loss on fixed clips uint8 (V, F, H, W, 3) with fixed masks, and target-token statistics."""
        self.model.eval()
        generator = torch.Generator().manual_seed(seed)
        losses, targets = [], []
        for batch in clips.split(self.settings.batch_size):
            pixels = preprocess_frames(batch.to(self.device), self.config.crop_size)
            with self._autocast():
                loss, target_tokens = self.model.loss(pixels, self._masks(len(batch), generator))
            losses.append(loss.item() * len(batch))
            targets.append(target_tokens.float().flatten(0, 1))  # (b*N, D)
        statistics = representation_statistics(torch.cat(targets))
        return {"val_loss": sum(losses) / len(clips), **statistics}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "train_seconds": self.train_seconds, "identity": self.identity,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def save_checkpoint(self, path: str | Path) -> None:
        state = self.state_dict()
        atomic_save(path, lambda temp: torch.save(state, temp))

    def load_checkpoint(self, path: str | Path, overwrite: bool = False) -> bool:
        """Continue from a checkpoint of the same identity -> True. Another identity, or a file that cannot
        be read: ValueError naming what, or False with `overwrite` (the caller starts afresh)."""
        state = read_checkpoint(path, self.device, "pretraining checkpoint", overwrite)
        if state is None or not may_resume("pretraining checkpoint", path, state.get("identity", {}), self.identity,
                                           overwrite):
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        return True
