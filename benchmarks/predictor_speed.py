"""Predictor rollout speed at the default size (configs/predictor/default.yaml), fp32 vs bf16, for
k x k latent tokens per frame with k = 1, 2, 4: one rollout of 300 samples x horizon 5 action blocks
from a full context, as one CEM iteration asks of the model (target: <= 50 ms on 2 CPU cores at the
default k). Medians over repeats; prints a table and writes JSON.

    python benchmarks/predictor_speed.py --threads 2 --output benchmarks/results/predictor_speed.json
    python benchmarks/predictor_speed.py --smoke --output /tmp/predictor_speed.json   # seconds, for tests
"""
from __future__ import annotations

import argparse
import platform
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.timing import median_seconds  # noqa: E402
from envs.io import atomic_write_json  # noqa: E402
from world_model.predictor import Predictor, PredictorConfig  # noqa: E402

MODEL_KEYS = ("block", "width", "depth", "heads", "mlp_ratio", "context_frames", "conditioning")


def model_settings(smoke: bool) -> dict:
    predictor = OmegaConf.load(REPO / "configs/predictor/default.yaml")
    encoder = OmegaConf.load(REPO / "configs/encoder/vjepa_tiny.yaml")
    settings = {key: predictor[key] for key in MODEL_KEYS}
    settings.update(latent_dim=int(encoder.architecture.hidden_size), action_dim=2)  # reacher
    if smoke:
        settings.update(width=32, depth=1, heads=2)
    return settings


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--grids", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--smoke", action="store_true", help="tiny model, few samples, one repeat")
    parser.add_argument("--output", default=str(REPO / "benchmarks/results/predictor_speed.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.samples, args.grids = 1, 8, [1, 2]
    torch.set_num_threads(args.threads)
    settings = model_settings(args.smoke)

    rows = []
    for grid in args.grids:
        torch.manual_seed(0)
        model = Predictor(PredictorConfig(**settings, pool_grid=grid)).eval()
        context = torch.randn(args.samples, model.config.context_frames, grid * grid, settings["latent_dim"])
        context = torch.nn.functional.layer_norm(context, context.shape[-1:])  # (S, C, N, D)
        actions = torch.rand(args.samples, args.horizon, settings["block"] * settings["action_dim"]) * 2 - 1
        for bf16 in (False, True):
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

            def rollout():
                with torch.inference_mode(), autocast:
                    model.rollout(context, actions)

            seconds = median_seconds(rollout, args.repeats, warmup=0 if args.smoke else 2)
            rows.append({"pool_grid": grid, "tokens_per_frame": grid * grid, "dtype": "bf16" if bf16 else "fp32",
                         "samples": args.samples, "horizon": args.horizon, "rollout_ms": round(seconds * 1e3, 2),
                         "rollouts_per_s": round(args.samples / seconds, 1)})

    print(f"predictor {settings['depth']} layers x {settings['width']} wide, {settings['conditioning']} "
          f"conditioning, context {settings['context_frames']}; {args.samples} samples x horizon {args.horizon}, "
          f"{args.threads} threads")
    print(f"{'k':>2} {'tokens':>6} {'dtype':>5} {'ms/rollout':>10} {'rollouts/s':>10}")
    for row in rows:
        print(f"{row['pool_grid']:>2} {row['tokens_per_frame']:>6} {row['dtype']:>5} {row['rollout_ms']:>10.1f} "
              f"{row['rollouts_per_s']:>10.0f}")
    atomic_write_json(args.output, {
        "benchmark": "predictor_speed", "model": settings, "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
