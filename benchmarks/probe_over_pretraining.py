"""The frozen probes along one pretraining run: does masked latent prediction add what a probe reads?

Pretrains the in-domain encoder that the overrides compose (a preset's, with any change), from
scratch on the dataset of RUN_DIR, exports its EMA target encoder at each of --steps, and scores
each export with `jepa-agent probe`'s probes and settings (`probe.*`): the linear probe on the pooled
grid and the attentive probe averaged over its probe seeds, on the positions and angles (not the
velocities, which one frame does not show). Step 0 is the random initialisation, the same encoder as
`probe`'s random baseline of seed `seed`, so the curve shows what each stretch of pretraining changed.
Writes RUN_DIR/probe_over_pretraining/: probe_over_pretraining.json (after every export, so a kill
keeps the rows done), probe_over_pretraining.png (R^2 against steps), config.yaml, and the exports
in snapshots/step_NNNNN/ (read by `world_model.load_encoder`). A rerun starts afresh.

    python -m benchmarks.probe_over_pretraining runs/r8 experiment=reacher threads=2
    python -m benchmarks.probe_over_pretraining runs/r8 experiment=reacher --steps 0,100,1500 \
        encoder.pretrain.variance_weight=1
    python -m benchmarks.probe_over_pretraining runs/pm2 experiment=point_mass --steps 0,500,1500
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from agent.config import compose_config
from benchmarks.arguments import benchmark_parser, run_main
from bookkeeping.io import atomic_save, atomic_write_json, atomic_write_text, ensure_writable_dir
from envs.dataset import recorded_angular_positions
from world_model.device import resolve_device
from world_model.encoder import load_encoder
from world_model.probe import check_settings, evaluate_encoder, probe_samples
from world_model.vjepa.clips import ClipSampler
from world_model.vjepa.pretrain import open_split
from world_model.vjepa.trainer import Pretrainer, PretrainSettings
from world_model.vjepa.weights import save_vjepa2

OUTPUT = "probe_over_pretraining"
DEFAULT_FRACTIONS = (0, 1 / 30, 1 / 10, 4 / 15, 8 / 15, 1)  # of encoder.pretrain.steps


def step_list(text: str) -> list[int]:
    try:
        steps = sorted({int(step) for step in text.split(",")})
    except ValueError:
        steps = []
    if not steps or steps[0] < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected comma-separated steps >= 0, e.g. 0,150,1500")
    return steps


def probed_groups(sample: tuple) -> tuple:
    """A probe sample (clips, {group: targets}, episode ids) with the velocities left out."""
    clips, targets, episode_ids = sample
    return clips, {group: value for group, value in targets.items() if group != "velocities"}, episode_ids


def plot(rows: list[dict], clear_margin: float, path: Path) -> None:
    """R^2 against pretraining steps, one line per (probe, group); attentive: min-max over probe seeds.
    Dotted: step 0's R^2 plus `clear_margin`, where `probe` would call an encoder clearly better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    figure, axes = plt.subplots(figsize=(6.4, 3.8))
    for group in rows[0]["linear"]:
        line, = axes.plot(steps, [row["linear"][group] for row in rows], "o-", label=f"linear, {group}")
        axes.axhline(rows[0]["linear"][group] + clear_margin, color=line.get_color(), linestyle=":")
        mean = np.array([row["attentive"][group] for row in rows])
        seeds = np.array([row["attentive_by_probe_seed"][group] for row in rows])  # (steps, probe seeds)
        bars = axes.errorbar(steps, mean, yerr=np.stack([mean - seeds.min(1), seeds.max(1) - mean]), fmt="s-",
                             capsize=3, label=f"attentive, {group} (min-max over probe seeds)")
        axes.axhline(mean[0] + clear_margin, color=bars.lines[0].get_color(), linestyle=":")
    axes.plot([], [], "k:", label=f"step 0 + probe.clear_margin ({clear_margin:g})")
    axes.set_xscale("symlog", linthresh=max(1, min([step for step in steps if step] or [1])))
    axes.set_xlabel("pretraining step (0: the random initialisation)")
    axes.set_ylabel("held-out R$^2$")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    atomic_save(path, lambda temp: figure.savefig(temp, format="png", dpi=120))
    plt.close(figure)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run_dir", help="the run directory whose dataset (RUN_DIR/dataset) is pretrained on")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=reacher threads=2")
    parser.add_argument("--steps", type=step_list, default=None,
                        help="the steps whose encoder is probed (default: 0 and 1/30, 1/10, 4/15, 8/15 and all of "
                             "encoder.pretrain.steps, 0,50,150,400,800,1500 for the reacher preset)")
    args = parser.parse_intermixed_args()  # overrides before and after --steps
    cfg = compose_config(args.run_dir, args.overrides)
    if cfg.encoder.get("pretrain") is None:
        raise ValueError(f"encoder={cfg.encoder.name} loads released weights; expected an in-domain encoder")
    settings = PretrainSettings.from_mapping(OmegaConf.to_container(cfg.encoder.pretrain, resolve=True))
    args.steps = args.steps or sorted({round(fraction * settings.steps) for fraction in DEFAULT_FRACTIONS})
    if args.steps[-1] > settings.steps:
        raise ValueError(f"--steps goes to {args.steps[-1]}, past encoder.pretrain.steps={settings.steps}")
    check_settings(cfg.probe)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dataset, device = Path(cfg.paths.dataset), resolve_device(cfg.device)
    stores = {split: open_split(dataset / split)  # in this order, so that a missing split is named alike every run
              for split in dict.fromkeys(("train", cfg.probe.train_split, cfg.probe.test_split))}
    angles = recorded_angular_positions(stores["train"].meta, f"dataset {str(stores['train'].split_dir)!r}")
    output = ensure_writable_dir(Path(args.run_dir) / OUTPUT, "output directory")
    atomic_write_text(output / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    train, test = (probed_groups(probe_samples(stores[split], cfg.probe.frame_stride, cfg.probe.max_frames,
                                               cfg.probe.clip_frames, angles))
                   for split in (cfg.probe.train_split, cfg.probe.test_split))

    frames = stores["train"].array("frames")  # (E, T+1, H, W, 3)
    architecture = OmegaConf.to_container(cfg.encoder.architecture, resolve=True)
    trainer = Pretrainer(architecture, settings, ClipSampler(frames, settings.clip_frames, settings.static_fraction),
                         device, int(cfg.seed))
    encode, rows = cfg.encoder.encode, []
    report = {"benchmark": OUTPUT, "task": stores["train"].meta.get("task"), "encoder": cfg.encoder.name,
              "pretrain_steps": settings.steps, "seed": int(cfg.seed), "threads": torch.get_num_threads(),
              "overrides": args.overrides, "train_frames": len(train[0]), "test_frames": len(test[0]), "rows": rows}
    progress = tqdm(total=args.steps[-1], desc="pretrain", unit="step", dynamic_ncols=True)
    for step in args.steps:
        while trainer.step < step:
            started = time.perf_counter()
            loss = trainer.train_step()["loss"]
            trainer.train_seconds += time.perf_counter() - started
            progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
            progress.update(1)
        snapshot = output / "snapshots" / f"step_{step:05d}"
        save_vjepa2(trainer.model.export(), snapshot)
        started = time.perf_counter()
        encoder = load_encoder(str(snapshot), device, bool(encode.autocast_bf16), int(encode.chunk_size))
        r2, attentive_by_seed = evaluate_encoder(encoder, train, test, cfg.probe, f"step {step}")
        rows.append({"step": step, "train_seconds": round(trainer.train_seconds, 1), **r2,
                     "attentive_by_probe_seed": attentive_by_seed,
                     "probe_seconds": round(time.perf_counter() - started, 1)})
        atomic_write_json(output / f"{OUTPUT}.json", report)
        progress.write(f"step {step:>5}: " + ", ".join(f"{kind} {group} {rows[-1][kind][group]:.3f}"
                                                      for kind in ("linear", "attentive") for group in r2[kind]))
    progress.close()
    plot(rows, float(cfg.probe.clear_margin), output / f"{OUTPUT}.png")
    print(f"wrote {output / (OUTPUT + '.json')} and {OUTPUT}.png")


if __name__ == "__main__":
    run_main(main)
