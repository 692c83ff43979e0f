"""Planning speed: seconds per CEM plan with the latent world model, for B envs planned at once.

The default predictor (configs/predictor/default.yaml; random weights: speed does not depend on them)
on latents of the default encoder's width, CEM 300 x 30, top 30, horizon 5 blocks. For B = 1, 4, 16
and fp32 vs bf16 autocast (and bf16 with torch.compile, `+c`, under --compile) it reports seconds per
plan, per env, rollouts/s, and the fraction of this machine's matrix-multiply peak (measured in the
same run) that planning achieves (FLOPs counted with torch.utils.flop_counter on one energy call). Prints a table, writes benchmarks/results/planning_speed.json.

    python -m benchmarks.planning_speed
    python -m benchmarks.planning_speed predictor.pool_grid=2       # Hydra overrides of the root config
    python -m benchmarks.planning_speed --compile                  # also rows with torch.compile (evaluate.compile)
    python -m benchmarks.planning_speed --smoke
"""
from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from agent.config import compose_config
from agent.worlds import LatentWorld
from benchmarks.arguments import benchmark_parser, positive_int, run_main
from benchmarks.timing import median_seconds
from bookkeeping.io import atomic_write_json
from planners import make_planner
from world_model.predictor import Predictor
from world_model.train_predictor import model_config

RESULTS = Path(__file__).resolve().parent / "results" / "planning_speed.json"


def matmul_peak_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Median FLOP/s of a square matmul: this machine's practical peak for `dtype`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / median_seconds(lambda: a @ b, repeats, warmup=1)


def planning_world(cfg, latent_dim: int, batch: int, bf16: bool) -> LatentWorld:
    """A LatentWorld with random context and goal latents (the encoder is not part of planning)."""
    predictor_cfg = cfg.predictor
    config = model_config(predictor_cfg, latent_dim, action_dim=2,  # reacher: 2 actions, proprio qpos + qvel
                          proprio_dim=4 if predictor_cfg.use_proprio else 0)
    predictor = Predictor(config).eval()
    world = LatentWorld(encoder=None, predictor=predictor, autocast_bf16=bf16)
    shape = (batch, config.tokens, config.output_dim)  # prepared latents (B, N, D')
    world.goal_latents = torch.randn(shape)
    world.context_latents = [torch.randn(shape) for _ in range(predictor_cfg.context_frames)]
    world.context_actions = [torch.rand(batch, predictor_cfg.block * 2) for _ in range(predictor_cfg.context_frames - 1)]
    world.context_proprio = [torch.randn(batch, config.proprio_dim) for _ in range(predictor_cfg.context_frames)
                             if config.proprio_dim]
    return world


def measure(cfg, latent_dim: int, batch: int, bf16: bool, repeats: int, compile: bool = False) -> dict:
    world = planning_world(cfg, latent_dim, batch, bf16)
    planner = make_planner(cfg.planner, cfg.predictor.block * 2)
    energy = world.energy_fn()
    probe = torch.rand(batch, cfg.planner.samples, cfg.planner.horizon, cfg.predictor.block * 2) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        energy(probe)
    flops_per_plan = counter.get_total_flops() * cfg.planner.iterations
    if compile:  # after counting: the FLOP counter does not see inside compiled graphs
        world.predictor.compile_advance()
    seconds = median_seconds(lambda: planner.plan(energy, batch_size=batch), repeats, warmup=1)
    rollouts = batch * cfg.planner.samples * cfg.planner.iterations
    return {"batch_envs": batch, "bf16": bf16, "compiled": compile, "seconds_per_plan": seconds, "seconds_per_env": seconds / batch,
            "rollouts_per_s": rollouts / seconds, "flops_per_plan": flops_per_plan,
            "achieved_flops": flops_per_plan / seconds}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks the script runs")
    parser.add_argument("--compile", action="store_true", help="also measure bf16 with torch.compile")
    parser.add_argument("--latent-dim", type=positive_int, default=192, help="encoder width (vjepa_tiny: 192)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the root config")
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.smoke:
        overrides += ["planner.samples=16", "planner.top_k=4", "planner.iterations=2", "predictor.depth=1",
                      "predictor.width=32", "predictor.heads=2"]
    cfg = compose_config(tempfile.gettempdir(), overrides)
    batches, repeats = ([1, 2], 1) if args.smoke else ([1, 4, 16], 3)
    peaks = {"fp32": matmul_peak_flops(torch.float32, 256 if args.smoke else 2048),
             "bf16": matmul_peak_flops(torch.bfloat16, 256 if args.smoke else 2048)}
    rows = []
    settings = [(False, False), (True, False)] + ([(True, True)] if args.compile else [])  # (bf16, compile)
    for bf16, compile in settings:
        for batch in batches:
            row = measure(cfg, args.latent_dim, batch, bf16, repeats, compile)
            row["fraction_of_peak"] = row["achieved_flops"] / peaks["bf16" if bf16 else "fp32"]
            rows.append(row)
    p = cfg.planner
    print(f"CEM {p.samples} x {p.iterations}, H={p.horizon}; predictor width {cfg.predictor.width}, "
          f"depth {cfg.predictor.depth}, {1 if cfg.predictor.flatten_grid else cfg.predictor.pool_grid ** 2} token(s)/frame; "
          f"matmul peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"{'dtype':6} {'B':>3} {'s/plan':>8} {'s/env':>8} {'rollouts/s':>11} {'GFLOP/s':>8} {'of peak':>8}")
    for row in rows:
        dtype = ("bf16" if row["bf16"] else "fp32") + ("+c" if row["compiled"] else "")
        print(f"{dtype:6} {row['batch_envs']:>3} {row['seconds_per_plan']:8.3f} "
              f"{row['seconds_per_env']:8.3f} {row['rollouts_per_s']:11.0f} {row['achieved_flops'] / 1e9:8.1f} "
              f"{row['fraction_of_peak']:8.1%}")
    atomic_write_json(RESULTS if not args.smoke else RESULTS.with_name("planning_speed_smoke.json"), {
        "rows": rows, "matmul_peak_flops": peaks, "overrides": overrides, "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(), "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()})


if __name__ == "__main__":
    run_main(main)
