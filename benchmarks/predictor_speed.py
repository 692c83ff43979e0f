"""Predictor rollout speed at the default size (configs/predictor/default.yaml), fp32 vs bf16: one
rollout of 300 samples x horizon 5 action blocks from one env's context, as one CEM iteration asks
of the model (target: <= 50 ms on 2 CPU cores at the default latent layout). Rows: the default layout
(the k x k grid flattened into one token and projected) and k x k separate tokens per frame for
k = 1, 2, 4, so the trade-off between latent size and planning speed is visible. Medians over
repeats; prints a table and writes JSON.

    python -m benchmarks.predictor_speed --threads 2     # -> benchmarks/results/predictor_speed.json
    python -m benchmarks.predictor_speed --smoke        # seconds, for tests: predictor_speed_smoke.json
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.arguments import benchmark_parser, positive_int, run_main
from benchmarks.timing import median_seconds
from bookkeeping.io import atomic_write_json
from world_model.device import bf16_autocast
from world_model.predictor import Predictor, PredictorConfig

REPO = Path(__file__).resolve().parents[1]

MODEL_KEYS = ("block", "width", "depth", "heads", "mlp_ratio", "context_frames", "conditioning", "condition_width")


def model_settings(smoke: bool) -> tuple[dict, dict]:
    """(model settings shared by every row, the default latent layout)."""
    predictor = OmegaConf.load(REPO / "configs/predictor/default.yaml")
    encoder = OmegaConf.load(REPO / "configs/encoder/vjepa_tiny.yaml")
    settings = {key: predictor[key] for key in MODEL_KEYS}
    settings.update(latent_dim=int(encoder.architecture.hidden_size), action_dim=2,  # reacher: 2 actions,
                    proprio_dim=4 if predictor.use_proprio else 0,                  # qpos (2) + qvel (2)
                    proprio_frequencies=int(predictor.proprio_frequencies))
    default_layout = {key: predictor[key] for key in ("pool_grid", "flatten_grid", "projection_dim")}
    if smoke:
        settings.update(width=32, depth=1, heads=2)
        default_layout.update(pool_grid=2, projection_dim=16)
    return settings, default_layout


def main(argv: list[str] | None = None) -> list[dict]:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=10)
    parser.add_argument("--samples", type=positive_int, default=300)
    parser.add_argument("--horizon", type=positive_int, default=5)
    parser.add_argument("--grids", type=positive_int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--smoke", action="store_true", help="tiny model, few samples, one repeat")
    parser.add_argument("--output", default=None,
                        help="default: benchmarks/results/predictor_speed.json (_smoke.json with --smoke)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.samples, args.grids = 1, 8, [1, 2]
    output = args.output or REPO / "benchmarks/results" / f"predictor_speed{'_smoke' if args.smoke else ''}.json"
    torch.set_num_threads(args.threads)
    settings, default_layout = model_settings(args.smoke)
    layouts = [("default", default_layout)] + [
        (f"k={grid}", {"pool_grid": grid, "flatten_grid": False, "projection_dim": None}) for grid in args.grids]

    rows = []
    for name, layout in layouts:
        torch.manual_seed(0)
        model = Predictor(PredictorConfig(**settings, **layout)).eval()
        config = model.config
        context = torch.randn(1, config.context_frames, config.tokens, config.output_dim)  # one env's context
        context = torch.nn.functional.layer_norm(context, context.shape[-1:])  # (1, C, N, D')
        actions = torch.rand(args.samples, args.horizon, config.block * config.action_dim) * 2 - 1
        context_proprio = torch.randn(1, config.context_frames, config.proprio_dim) if config.proprio_dim else None
        for bf16 in (False, True):
            autocast = bf16_autocast("cpu", bf16)

            def rollout():
                with torch.inference_mode(), autocast:
                    model.rollout(context, actions, context_proprio=context_proprio)

            seconds = median_seconds(rollout, args.repeats, warmup=0 if args.smoke else 2)
            rows.append({"layout": name, "pool_grid": config.pool_grid, "tokens_per_frame": config.tokens,
                         "latent_dim": config.output_dim, "dtype": "bf16" if bf16 else "fp32",
                         "samples": args.samples, "horizon": args.horizon, "rollout_ms": round(seconds * 1e3, 2),
                         "rollouts_per_s": round(args.samples / seconds, 1)})

    print(f"predictor {settings['depth']} layers x {settings['width']} wide, {settings['conditioning']} "
          f"conditioning, context {settings['context_frames']}; {args.samples} samples x horizon {args.horizon}, "
          f"{args.threads} threads")
    print(f"{'layout':>8} {'tokens':>6} {'width':>5} {'dtype':>5} {'ms/rollout':>10} {'rollouts/s':>10}")
    for row in rows:
        print(f"{row['layout']:>8} {row['tokens_per_frame']:>6} {row['latent_dim']:>5} {row['dtype']:>5} "
              f"{row['rollout_ms']:>10.1f} {row['rollouts_per_s']:>10.0f}")
    atomic_write_json(output, {
        "benchmark": "predictor_speed", "model": settings, "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "rows": rows})
    print(f"wrote {output}")
    return rows


if __name__ == "__main__":
    run_main(main)
