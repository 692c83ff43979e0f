"""`jepa-agent pretrain`: self-supervised V-JEPA pretraining on the collected task videos.

Reads `cfg.paths.dataset/train` (clips for training) and `/val` (fixed clips for validation loss and
collapse statistics). Writes `cfg.paths.encoder`:
    config.json, model.safetensors   transformers `VJEPA2Model` (EMA target encoder + predictor),
                                     read by `world_model.load_encoder(cfg.paths.encoder)`
    checkpoints/last.pt              resume state, rewritten every `checkpoint_every` steps
    metrics.csv                      loss (L1 + any penalties), lr, EMA momentum, val loss, token
                                     std, effective rank
    tensorboard/                     the same curves as TensorBoard event files (`world_model.event_log`)
    pretrain_summary.json            written last: the run is finished
    config.yaml                      the resolved config
A rerun after a kill resumes from the last checkpoint; a rerun of a finished run returns at once. Both
only when the run's identity (architecture, settings, seed, the training split's metadata and size:
`run_identity`) is the same: another is refused, naming the differences, unless `run.overwrite=true`,
which deletes the other run's encoder and checkpoint and starts afresh.
The training frames are read into memory (1.2 GB for the `reacher` preset).
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bookkeeping.io import atomic_write_json, atomic_write_text, ensure_writable_dir, may_resume, read_json
from world_model.device import resolve_device
from world_model.event_log import EventLog
from world_model.vjepa.clips import ClipSampler
from world_model.vjepa.statistics import MetricsLog
from world_model.vjepa.trainer import Pretrainer, PretrainSettings, run_identity
from world_model.vjepa.weights import WEIGHTS_FILE, save_vjepa2

METRIC_FIELDS = ["loss", "lr", "momentum", "val_loss", "token_std", "min_dim_std", "effective_rank",
                 "train_seconds"]
EVENT_TAGS = {"loss": "train/loss", "lr": "train/lr", "momentum": "train/ema_momentum", "val_loss": "val/loss",
              "token_std": "representation/token_std", "min_dim_std": "representation/min_dim_std",
              "effective_rank": "representation/effective_rank"}  # metrics.csv's columns in TensorBoard
SUMMARY_FILE = "pretrain_summary.json"


def open_split(split_dir: Path):
    from envs.dataset import EpisodeStore

    if not split_dir.is_dir():
        raise FileNotFoundError(f"dataset split {str(split_dir)!r} does not exist; run `jepa-agent collect` "
                                "first (or set paths.dataset)")
    store = EpisodeStore(split_dir)
    if len(store) == 0:
        raise ValueError(f"dataset split {str(split_dir)!r} holds no episodes")
    return store


def finished_summary(output: Path, identity: dict, overwrite: bool) -> dict | None:
    """The summary of a finished run of this identity in `output`; None when there is none, or when
    there is one of another identity and `overwrite` is set (ValueError without it)."""
    summary_path = output / SUMMARY_FILE
    if not all((output / name).is_file() for name in (SUMMARY_FILE, "config.json", WEIGHTS_FILE)):
        return None  # not finished, or its export is gone (made again from the last checkpoint)
    summary = read_json(summary_path)
    resumable = may_resume("pretrained encoder", output, summary.get("identity", {}), identity, overwrite)
    return summary if resumable else None


def main(cfg: DictConfig) -> None:
    """Pretrain the in-domain encoder described by `cfg.encoder` and export it to `cfg.paths.encoder`."""
    if cfg.encoder.get("pretrain") is None or cfg.encoder.get("architecture") is None:
        raise ValueError(f"encoder={cfg.encoder.name} loads released weights ({cfg.encoder.source}); "
                         "pretrain needs an in-domain encoder config such as encoder=vjepa_tiny")
    settings_values = OmegaConf.to_container(cfg.encoder.pretrain, resolve=True)
    architecture = OmegaConf.to_container(cfg.encoder.architecture, resolve=True)
    settings = PretrainSettings.from_mapping(settings_values)
    output = ensure_writable_dir(cfg.paths.encoder, "encoder directory")
    dataset = Path(cfg.paths.dataset)
    train_store, val_store = open_split(dataset / "train"), open_split(dataset / "val")
    meta = dict(train_store.meta)
    data = {"dataset": meta, "train_episodes": len(train_store)}
    overwrite = bool(cfg.run.overwrite)
    summary = finished_summary(output, run_identity(architecture, settings, int(cfg.seed), data), overwrite)
    if summary is not None:
        atomic_write_text(output / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))  # the config it answers to now
        print(f"pretrain: {output} already holds an encoder pretrained for {summary['steps']} steps "
              f"(final val loss {summary['final'].get('val_loss')}); nothing to do")
        return

    train_frames = train_store.array("frames")  # (E, T+1, H, W, 3)
    device = resolve_device(cfg.device)
    train_clips = ClipSampler(train_frames, settings.clip_frames, settings.static_fraction)
    trainer = Pretrainer(architecture, settings, train_clips, device, int(cfg.seed), data)
    val_clips = ClipSampler(val_store.array("frames"), settings.clip_frames).fixed(settings.val_clips, cfg.seed)
    checkpoint = output / "checkpoints" / "last.pt"
    if checkpoint.is_file() and trainer.load_checkpoint(checkpoint, overwrite):
        print(f"pretrain: resuming from step {trainer.step} ({checkpoint})")
    else:  # whatever is left belongs to another run: gone now, so the outputs always match config.yaml
        for stale in (SUMMARY_FILE, "config.json", "model.safetensors", "checkpoints/last.pt"):
            (output / stale).unlink(missing_ok=True)
    atomic_write_text(output / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    log = MetricsLog(output / "metrics.csv", METRIC_FIELDS, keep_until_step=trainer.step)
    events = EventLog(output, resumed_step=trainer.step)
    print(f"pretrain: {meta.get('task', '?')} {train_frames.shape[0]} train episodes, "
          f"{sum(p.numel() for p in trainer.model.context_model.parameters()) / 1e6:.2f}M parameters, "
          f"{settings.steps} steps x {settings.batch_size} clips of {settings.clip_frames} frames on {device.type}"
          f"{' (bf16 autocast)' if settings.autocast_bf16 else ''}")

    progress = tqdm(total=settings.steps, initial=trainer.step, desc="pretrain", unit="step", dynamic_ncols=True)
    metrics: dict[str, float] = {}
    while trainer.step < settings.steps:
        started = time.perf_counter()
        metrics = trainer.train_step()
        trainer.train_seconds += time.perf_counter() - started
        step = trainer.step
        last = step == settings.steps
        if step % settings.val_every == 0 or last:
            metrics.update(trainer.evaluate(val_clips, seed=cfg.seed))
        if step % settings.log_every == 0 or "val_loss" in metrics:
            log.append(step, {**metrics, "train_seconds": trainer.train_seconds})
            events.scalars(step, {EVENT_TAGS[name]: value for name, value in metrics.items()})
        if step % settings.checkpoint_every == 0 or last:
            events.flush()  # first: a checkpoint on disk has its curves on disk
            trainer.save_checkpoint(checkpoint)
        progress.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        progress.update(1)
    progress.close()
    events.close()
    if "val_loss" not in metrics:  # resumed from the final checkpoint of a run killed before export
        metrics = trainer.evaluate(val_clips, seed=cfg.seed)

    save_vjepa2(trainer.model.export(), output)
    final = {key: value for key, value in metrics.items() if key != "lr"}
    atomic_write_json(output / SUMMARY_FILE, {
        "steps": trainer.step, "train_seconds": round(trainer.train_seconds, 1), "device": device.type,
        "task": meta.get("task"), "final": final, "pretrain": settings_values, "architecture": architecture,
        "identity": trainer.identity})
    print(f"pretrain: done in {trainer.train_seconds / 60:.1f} min of training; val loss "
          f"{final['val_loss']:.4f}, effective rank {final['effective_rank']:.1f}; encoder written to {output}")
