"""Planner overhead on a cheap synthetic energy: seconds per plan for B envs planned at once.

CEM 300 samples x 30 iterations, top 30, horizon 5 blocks, D = block * A = 10 (reacher: block 5,
A = 2), energy = a quadratic (nearly free), so the time is the planner's own sampling and refitting,
separate from the world model. Prints a table and writes benchmarks/results/planner_synthetic.json.

    python -m benchmarks.planner_synthetic            # B = 1, 4, 16; median of 7 repeats
    python -m benchmarks.planner_synthetic --smoke    # tiny: checks the script runs
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch

from benchmarks.arguments import benchmark_parser, positive_int, run_main
from bookkeeping.io import atomic_write_json
from planners import CEMPlanner, MPPIPlanner

RESULTS = Path(__file__).resolve().parent / "results" / "planner_synthetic.json"


def seconds_per_plan(planner, batch_size: int, repeats: int) -> float:
    """Median wall-clock seconds of one `plan` call for batch_size envs (one warm-up call first)."""
    target = torch.linspace(-0.5, 0.5, planner.horizon * planner.action_dim).reshape(planner.horizon, -1)

    def energy_fn(actions):  # (B, S, H, D) -> (B, S)
        return ((actions - target) ** 2).sum(dim=(-1, -2))

    planner.plan(energy_fn, batch_size=batch_size)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        planner.plan(energy_fn, batch_size=batch_size)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks the script runs")
    parser.add_argument("--action-dim", type=positive_int, default=10, help="D = block * A")
    args = parser.parse_args()
    samples, iterations, repeats, batch_sizes = (32, 3, 2, [1, 4]) if args.smoke else (300, 30, 7, [1, 4, 16])
    settings = dict(samples=samples, iterations=iterations, horizon=5)
    planners = {"cem": CEMPlanner(args.action_dim, top_k=min(30, samples), **settings),
                "mppi": MPPIPlanner(args.action_dim, **settings)}
    rows = []
    for name, planner in planners.items():
        for batch_size in batch_sizes:
            seconds = seconds_per_plan(planner, batch_size, repeats)
            rows.append(dict(planner=name, batch_size=batch_size, seconds_per_plan=seconds,
                             seconds_per_env=seconds / batch_size))
    setting = f"({samples} x {iterations}, H=5, D={args.action_dim})"
    print(f"{'planner':8} {'B':>4} {'s/plan':>10} {'s/env':>10}   {setting}")
    for row in rows:
        seconds, per_env = row["seconds_per_plan"], row["seconds_per_env"]
        print(f"{row['planner']:8} {row['batch_size']:>4} {seconds:>10.4f} {per_env:>10.4f}")
    output = RESULTS.with_name("planner_synthetic_smoke.json") if args.smoke else RESULTS
    atomic_write_json(output, dict(
        settings=dict(settings, action_dim=args.action_dim, repeats=repeats, smoke=args.smoke),
        machine=dict(platform=platform.platform(), torch=torch.__version__, threads=torch.get_num_threads()),
        rows=rows,
    ))
    print(f"wrote {output}")


if __name__ == "__main__":
    run_main(main)
