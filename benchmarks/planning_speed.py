"""Planning speed: seconds per plan with the latent world model, CEM against faster planners, B envs at once.

The default predictor (configs/predictor/default.yaml, or the `predictor` config group options `--predictors`
names: `lean` is issue 28's small one; random weights: speed does not depend on them) on latents of the default
encoder's width, horizon 5 blocks. Each planner is a `planner` config group option (`cem`: 300 x 30, top 30; `icem`:
configs/planner/icem.yaml); for B envs planned at once (default 1 and 16), fp32 and bf16 autocast (bf16 by default
only where the CPU computes it natively, as the configs pick) and with torch.compile (`+c`, under --compile), it
reports seconds per plan, per env, and three ratios measured in the same run: per env against the same predictor,
planner and precision at B = 1 (target at B = 16: <= 1/8), against CEM in fp32 at B = 1 with the first predictor
named (the baseline), and against the simulator oracle's plan (CEM with the true MuJoCo simulator, as
`evaluate.agent=oracle` plans) at B = 1. Also rollouts/s and the fraction of this machine's matrix-multiply peak
(measured in the same run; FLOPs counted with torch.utils.flop_counter on one energy call). Every case is timed
once per round, rounds repeated (--repeats), so a load that changes during the run falls on all of them; medians
over the rounds. The load average at start and end goes into the JSON. Prints a table, writes
benchmarks/results/planning_speed.json.

    python -m benchmarks.planning_speed                          # cem and icem, B = 1 and 16, fp32 (+ bf16 if native)
    python -m benchmarks.planning_speed --planners cem icem mppi --batches 1 4 16 --repeats 5
    python -m benchmarks.planning_speed --compile                # also rows with torch.compile (evaluate.compile)
    python -m benchmarks.planning_speed --planners cem --predictors default lean --compile   # issue 28's target
    python -m benchmarks.planning_speed --dtypes fp32 bf16       # bf16 also where it is emulated (AVX2: 4-8x slower)
    python -m benchmarks.planning_speed predictor.pool_grid=2    # Hydra overrides, applied to every planner
    python -m benchmarks.planning_speed --smoke
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import envs
from agent.config import compose_config
from agent.simulator_world import SimulatorWorld
from agent.worlds import LatentWorld
from benchmarks.arguments import benchmark_parser, positive_int, run_main
from benchmarks.timing import median_seconds
from bookkeeping.io import atomic_write_json
from planners import make_planner
from world_model.device import native_bf16
from world_model.predictor import Predictor
from world_model.train_predictor import model_config

RESULTS = Path(__file__).resolve().parent / "results" / "planning_speed.json"
ACTIONS = 2  # reacher: 2 actions, proprio qpos + qvel (4)


def matmul_peak_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Median FLOP/s of a square matmul: this machine's practical peak for `dtype`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / median_seconds(lambda: a @ b, repeats, warmup=1)


def planning_world(cfg, latent_dim: int, batch: int, bf16: bool, compile: bool = False) -> LatentWorld:
    """A LatentWorld with random context and goal latents (the encoder is not part of planning); `compile`: as
    `evaluate.compile` compiles it."""
    predictor_cfg = cfg.predictor
    config = model_config(predictor_cfg, latent_dim, action_dim=ACTIONS,
                          proprio_dim=2 * ACTIONS if predictor_cfg.use_proprio else 0)
    predictor = Predictor(config).eval()
    world = LatentWorld(encoder=None, predictor=predictor, autocast_bf16=bf16, compile=compile)
    shape = (batch, config.tokens, config.output_dim)  # prepared latents (B, N, D')
    world.goal_latents = torch.randn(shape)
    world.context_latents = [torch.randn(shape) for _ in range(predictor_cfg.context_frames)]
    world.context_actions = [torch.rand(batch, predictor_cfg.block * ACTIONS)
                             for _ in range(predictor_cfg.context_frames - 1)]
    world.context_proprio = [torch.randn(batch, config.proprio_dim) for _ in range(predictor_cfg.context_frames)
                             if config.proprio_dim]
    return world


def latent_case(cfg, latent_dim: int, batch: int, bf16: bool,
                compile: bool = False, predictor: str = "default") -> tuple[dict, Callable[[], object]]:
    """(the row's settings and FLOPs, a function that makes one plan) for the latent world model; `predictor`
    names the row's `cfg.predictor` (its config group option)."""
    world = planning_world(cfg, latent_dim, batch, bf16, compile)
    planner = make_planner(cfg.planner, cfg.predictor.block * ACTIONS)
    counted = planning_world(cfg, latent_dim, batch, bf16) if compile else world  # the counter sees no compiled graph
    probe = torch.rand(batch, planner.samples, planner.horizon, planner.action_dim) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        counted.energy_fn()(probe)
    energy = world.energy_fn()
    row = {"predictor": predictor, "width": cfg.predictor.width, "depth": cfg.predictor.depth,
           "planner": cfg.planner.name, "samples": planner.samples, "iterations": planner.iterations,
           "batch_envs": batch, "bf16": bf16, "compiled": compile,
           "flops_per_plan": counter.get_total_flops() * planner.iterations}
    return row, lambda: planner.plan(energy, batch_size=batch)


def oracle_case(cfg, batch: int) -> tuple[dict, Callable[[], object]]:
    """(the row's settings, a function that makes one plan) for CEM on the true simulator (the oracle)."""
    task = envs.make_from_config(cfg.env)
    _, info = task.reset(seed=0)
    states = np.repeat(info["state"][None], batch, axis=0)  # (B, S)
    goals = states + np.array([0.5, -0.3] + [0.0] * (states.shape[1] - 2))  # (B, S): joints moved, at rest
    world = SimulatorWorld(task, int(cfg.predictor.block), aggregate=cfg.evaluate.energy.aggregate)
    world.set_goal(None, goals)
    world.observe(None, states)
    planner = make_planner(cfg.planner, cfg.predictor.block * task.action_space.shape[0])
    row = {"predictor": "simulator", "planner": "oracle " + cfg.planner.name, "samples": planner.samples,
           "iterations": planner.iterations, "batch_envs": batch, "bf16": False, "compiled": False,
           "flops_per_plan": None}
    return row, lambda: planner.plan(world.energy_fn(), batch_size=batch)


def time_round_robin(cases: list[tuple[dict, Callable[[], object]]], repeats: int) -> list[dict]:
    """One warm-up plan per case, then `repeats` rounds timing each case once -> rows with median seconds."""
    for _, plan in cases:
        plan()
    timings = [[] for _ in cases]
    for _ in range(repeats):
        for timing, (_, plan) in zip(timings, cases):
            started = time.perf_counter()
            plan()
            timing.append(time.perf_counter() - started)
    rows = []
    for timing, (row, _) in zip(timings, cases):
        seconds = statistics.median(timing)
        rows.append({**row, "seconds_per_plan": seconds, "seconds_per_env": seconds / row["batch_envs"],
                     "seconds_each_repeat": timing,
                     "rollouts_per_s": row["batch_envs"] * row["samples"] * row["iterations"] / seconds})
    return rows


def add_ratios(rows: list[dict], peaks: dict) -> None:
    """Per env against the same predictor, planner and precision at B = 1; against CEM fp32 at B = 1 with the first
    row's predictor (the baseline); against the oracle at B = 1."""
    def seconds_at_one(predictor: str, planner: str, bf16: bool, compiled: bool) -> float | None:
        match = [row["seconds_per_plan"] for row in rows if row["batch_envs"] == 1 and row["planner"] == planner
                 and row["predictor"] == predictor and row["bf16"] == bf16 and row["compiled"] == compiled]
        return match[0] if match else None

    baseline = seconds_at_one(rows[0]["predictor"], "cem", False, False)
    oracle = seconds_at_one("simulator", "oracle cem", False, False)
    for row in rows:
        alone = seconds_at_one(row["predictor"], row["planner"], row["bf16"], row["compiled"])
        for key, reference in (("vs_batch_one", alone), ("vs_cem_fp32", baseline), ("vs_oracle", oracle)):
            row[key] = row["seconds_per_env"] / reference if reference else None
        flops = row["flops_per_plan"]
        row["achieved_flops"] = flops / row["seconds_per_plan"] if flops else None
        row["fraction_of_peak"] = flops / row["seconds_per_plan"] / peaks["bf16" if row["bf16"] else "fp32"] \
            if flops else None


def print_table(rows: list[dict], cfg, peaks: dict) -> None:
    shapes = {row["predictor"]: f"{row['predictor']} {row['width']} wide x {row['depth']} deep" for row in rows
              if "width" in row}
    print(f"horizon {cfg.planner.horizon}; predictors: {', '.join(shapes.values())}; "
          f"{1 if cfg.predictor.flatten_grid else cfg.predictor.pool_grid ** 2} token(s)/frame; "
          f"{torch.get_num_threads()} threads; matmul peak "
          + ", ".join(f"{dtype} {flops / 1e9:.3g} GFLOP/s" for dtype, flops in peaks.items())
          + f"; ratios: s/env over B = 1, CEM fp32 B = 1 ({rows[0]['predictor']}), oracle B = 1")
    print(f"{'predictor':>9} {'planner':>10} {'S x I':>8} {'dtype':6} {'B':>3} {'s/plan':>8} {'s/env':>8} "
          f"{'/B=1':>6} {'/CEM':>6} {'/oracle':>7} {'rollouts/s':>10} {'of peak':>7}")
    for row in rows:
        dtype = ("bf16" if row["bf16"] else "fp32") + ("+c" if row["compiled"] else "")
        ratios = " ".join(f"{row[key]:{width}.3f}" if row[key] is not None else f"{'-':>{width}}"
                          for key, width in (("vs_batch_one", 6), ("vs_cem_fp32", 6), ("vs_oracle", 7)))
        peak = f"{row['fraction_of_peak']:7.1%}" if row["fraction_of_peak"] is not None else f"{'-':>7}"
        print(f"{row['predictor']:>9} {row['planner']:>10} {row['samples']:>4}x{row['iterations']:<3} {dtype:6} "
              f"{row['batch_envs']:>3} {row['seconds_per_plan']:8.3f} {row['seconds_per_env']:8.3f} {ratios} "
              f"{row['rollouts_per_s']:10.0f} {peak}")


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks the script runs")
    parser.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    parser.add_argument("--latent-dim", type=positive_int, default=192, help="encoder width (vjepa_tiny: 192)")
    parser.add_argument("--planners", nargs="+", default=["cem", "icem"], help="planner config group options")
    parser.add_argument("--predictors", nargs="+", default=["default"],
                        help="predictor config group options (configs/predictor); the first is the /CEM baseline")
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[1, 16], help="envs planned at once")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed rounds (medians over them)")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=None,
                        help="precisions timed (default: fp32, and bf16 where this CPU computes it natively)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the root config")
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.smoke:
        overrides += ["planner.samples=16", "planner.top_k=4", "planner.iterations=2", "predictor.depth=1",
                      "predictor.width=32", "predictor.heads=2"]
        args.batches, args.repeats = [1, 2], 1
    load_at_start = os.getloadavg()
    planners, predictors = list(dict.fromkeys(["cem", *args.planners])), list(dict.fromkeys(args.predictors))
    configs = {(predictor, planner): compose_config(tempfile.gettempdir(), [
        f"predictor={predictor}", f"planner={planner}", *overrides])
        for predictor in predictors for planner in planners}
    dtypes = args.dtypes or ["fp32"] + (["bf16"] if native_bf16("cpu") else [])
    peaks = {dtype: matmul_peak_flops(getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype]),
                                      256 if args.smoke else 2048) for dtype in dict.fromkeys(dtypes)}
    settings = [(dtype == "bf16", compile) for compile in ([False, True] if args.compile else [False])
                for dtype in peaks]  # (bf16, compile) pairs
    cases = [latent_case(configs[predictor, planner], args.latent_dim, batch, bf16, compile, predictor)
             for predictor in predictors for planner in planners for bf16, compile in settings
             for batch in args.batches]
    baseline = configs[predictors[0], "cem"]
    cases += [oracle_case(baseline, batch) for batch in args.batches]
    rows = time_round_robin(cases, args.repeats)
    add_ratios(rows, peaks)
    print_table(rows, baseline, peaks)
    atomic_write_json(RESULTS if not args.smoke else RESULTS.with_name("planning_speed_smoke.json"), {
        "rows": rows, "matmul_peak_flops": peaks, "overrides": overrides, "repeats": args.repeats,
        "native_bf16": native_bf16("cpu"), "torch_threads": torch.get_num_threads(),
        "load_average_start": load_at_start, "load_average_end": os.getloadavg(), "machine": platform.platform(),
        "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()})


if __name__ == "__main__":
    run_main(main)
