"""Planning cost of the pixel world model against the latent predictor (issue 27), measured in one process with
the two timed in turn, so that other jobs on a shared machine slow both alike: one rollout of 300 candidates x
horizon 5 action blocks from one env's context (what one CEM iteration asks per env), at the sizes
`jepa-agent run experiment=quick [world_model=pixel]` builds (reacher: 2 actions, 4 proprio values; weights
do not change the cost, so untrained models are timed). Medians over repeats; prints a table and writes JSON.

    python -m benchmarks.pixel_vs_latent_speed --threads 2   # -> benchmarks/results/pixel_vs_latent_speed.json
    python -m benchmarks.pixel_vs_latent_speed --smoke      # seconds: tiny models
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch
from omegaconf import OmegaConf

from agent.config import compose_config
from benchmarks.arguments import benchmark_parser, positive_int, run_main
from benchmarks.timing import median_seconds
from bookkeeping.io import atomic_write_json
from world_model.device import bf16_autocast
from world_model.pixel_model import PixelWorldModel, parameter_count
from world_model.predictor import Predictor
from world_model.train_pixel import model_config as pixel_model_config
from world_model.train_predictor import model_config as latent_model_config

REPO = Path(__file__).resolve().parents[1]


def models(smoke: bool):
    """(latent predictor, its context builder, pixel model, its context) at the quick preset's sizes."""
    overrides = ["experiment=micro"] if smoke else ["experiment=quick"]
    cfg = compose_config(REPO / "benchmarks/results/unused_run_dir", [*overrides, "world_model=pixel"])
    encoder_width = int(cfg.encoder.architecture.hidden_size)
    latent = Predictor(latent_model_config(cfg.predictor, encoder_width, 2, 4 if cfg.predictor.use_proprio else 0))
    pixel = PixelWorldModel(pixel_model_config(cfg, 2))
    return latent.eval(), pixel.eval(), OmegaConf.to_container(cfg.pixel, resolve=True)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--samples", type=positive_int, default=300)
    parser.add_argument("--horizon", type=positive_int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny models, few samples, one repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.samples = 1, 8
    output = REPO / "benchmarks/results" / f"pixel_vs_latent_speed{'_smoke' if args.smoke else ''}.json"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    latent, pixel, pixel_settings = models(args.smoke)
    config = latent.config
    latent_context = torch.nn.functional.layer_norm(
        torch.randn(1, config.context_frames, config.tokens, config.output_dim), (config.output_dim,))  # (1, C, N, D')
    latent_proprio = torch.randn(1, config.context_frames, config.proprio_dim) if config.proprio_dim else None
    size = pixel.config.image_size
    pixel_context = torch.rand(1, pixel.config.context_frames, 3, size, size) - 0.5  # (1, C, 3, r, r)
    actions = torch.rand(args.samples, args.horizon, config.block * config.action_dim) * 2 - 1
    rows = []
    for bf16 in (False, True):
        autocast = bf16_autocast("cpu", bf16)

        def latent_rollout():
            with torch.inference_mode(), autocast:
                latent.rollout(latent_context, actions, context_proprio=latent_proprio)

        def pixel_rollout():
            with torch.inference_mode(), autocast:
                pixel.rollout(pixel_context, actions)

        latent_times, pixel_times = [], []
        for _ in range(args.repeats):  # in turn: a burst of load slows both
            latent_times.append(median_seconds(latent_rollout, 1, warmup=0 if args.smoke else 1))
            pixel_times.append(median_seconds(pixel_rollout, 1, warmup=0 if args.smoke else 1))
        latent_ms, pixel_ms = (sorted(times)[len(times) // 2] * 1e3 for times in (latent_times, pixel_times))
        rows.append({"dtype": "bf16" if bf16 else "fp32", "latent_ms": round(latent_ms, 1),
                     "pixel_ms": round(pixel_ms, 1), "pixel_over_latent": round(pixel_ms / latent_ms, 1)})
    print(f"one rollout of {args.samples} candidates x {args.horizon} blocks, {args.threads} threads; parameters: "
          f"latent predictor {parameter_count(latent):,}, pixel model {parameter_count(pixel):,} "
          f"({pixel.config.image_size} px)")
    print(f"{'dtype':>5} {'latent ms':>10} {'pixel ms':>10} {'pixel / latent':>14}")
    for row in rows:
        print(f"{row['dtype']:>5} {row['latent_ms']:>10.1f} {row['pixel_ms']:>10.1f} {row['pixel_over_latent']:>14.1f}")
    atomic_write_json(output, {"benchmark": "pixel_vs_latent_speed", "threads": args.threads, "repeats": args.repeats,
                               "samples": args.samples, "horizon": args.horizon, "pixel": pixel_settings,
                               "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                               "rows": rows})
    print(f"wrote {output}")
    return rows


if __name__ == "__main__":
    run_main(main)
