"""Encoder speed at the default in-domain size (configs/encoder/vjepa_tiny.yaml), fp32 vs bf16:
encoding throughput (frames/s, single frames as the planner embeds them) and pretraining step time
(with the projected duration of the default pretraining run). Medians over repeats; writes JSON,
with the precision the configs pick on this machine (bf16 only where it is native: `native_bf16`).

    python -m benchmarks.encoder_speed --threads 2 --output benchmarks/results/encoder_speed.json
    python -m benchmarks.encoder_speed --encoder vjepa_tiny_point_mass   # any in-domain `encoder` option
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from agent.config import compose_config
from benchmarks.arguments import benchmark_parser, positive_int, run_main
from benchmarks.timing import median_seconds
from bookkeeping.io import atomic_write_json
from world_model.device import native_bf16
from world_model.encoder import random_encoder
from world_model.vjepa.clips import ClipSampler
from world_model.vjepa.trainer import Pretrainer, PretrainSettings, build_config

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--encoder", default="vjepa_tiny", help="an in-domain option of configs/encoder/")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=10)
    parser.add_argument("--encode-batch", type=positive_int, default=64)
    parser.add_argument("--output", default=str(REPO / "benchmarks/results/encoder_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    group = compose_config(".", [f"encoder={args.encoder}"]).encoder
    if group.get("pretrain") is None:
        raise ValueError(f"encoder={args.encoder} loads released weights; "
                         "expected an in-domain option such as vjepa_tiny")
    architecture = OmegaConf.to_container(group.architecture)
    pretrain_values = OmegaConf.to_container(group.pretrain)
    config = build_config(architecture, pretrain_values["clip_frames"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.encode_batch, config.crop_size, config.crop_size, 3), dtype=np.uint8)
    episodes = rng.integers(0, 256, (8, 21, config.crop_size, config.crop_size, 3), dtype=np.uint8)

    rows = []
    for bf16 in (False, True):
        encoder = random_encoder(config, device="cpu", autocast_bf16=bf16, chunk_size=args.encode_batch)
        encode_seconds = median_seconds(lambda: encoder.encode_images(images), args.repeats)
        settings = PretrainSettings.from_mapping({**pretrain_values, "autocast_bf16": bf16})
        trainer = Pretrainer(architecture, settings, ClipSampler(episodes, settings.clip_frames), torch.device("cpu"))
        step_seconds = median_seconds(trainer.train_step, args.repeats)
        rows.append({"precision": "bf16" if bf16 else "fp32",
                     "encode_frames_per_s": round(args.encode_batch / encode_seconds, 1),
                     "pretrain_step_s": round(step_seconds, 4),
                     "pretrain_clips_per_s": round(settings.batch_size / step_seconds, 1),
                     "projected_pretrain_minutes": round(settings.steps * step_seconds / 60, 1)})

    result = {"benchmark": "encoder_speed", "encoder": args.encoder, "threads": args.threads,
              "cpu": platform.processor() or platform.machine(), "load_average_1min": os.getloadavg()[0],
              "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "default_precision": "bf16" if native_bf16("cpu") else "fp32", "input_px": config.crop_size,
              "tokens_per_frame": (config.crop_size // config.patch_size) ** 2, "hidden_size": config.hidden_size,
              "pretrain_batch_size": pretrain_values["batch_size"], "clip_frames": pretrain_values["clip_frames"],
              "pretrain_steps": pretrain_values["steps"], "repeats": args.repeats, "results": rows}
    atomic_write_json(args.output, result)
    print(f"{'precision':<10}{'encode frames/s':>17}{'step s':>9}{'clips/s':>9}{'projected pretrain min':>24}")
    for row in rows:
        print(f"{row['precision']:<10}{row['encode_frames_per_s']:>17}{row['pretrain_step_s']:>9}"
              f"{row['pretrain_clips_per_s']:>9}{row['projected_pretrain_minutes']:>24}")
    print(f"threads {args.threads}, load average {result['load_average_1min']:.1f}; the configs pick "
          f"{result['default_precision']} on this CPU ({result['cpu_capability']}); wrote {args.output}")


if __name__ == "__main__":
    run_main(main)
