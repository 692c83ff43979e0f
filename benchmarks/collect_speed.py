"""Collection speed: frames/s of `collect` (simulate + render + write shards) on reacher at 64 px.

Runs the production collector (`envs.collect.main`) into a temporary directory, median over repeats,
with shadows/reflections off (the default for training data) and on (for the ratio). Prints a table
and writes benchmarks/results/collect_speed.json.

    python -m benchmarks.collect_speed            # 3 repeats of 40 episodes x 100 steps
    python -m benchmarks.collect_speed --smoke    # tiny: checks the script runs
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from agent.config import compose_config
from benchmarks.arguments import benchmark_parser, run_main
from bookkeeping.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "collect_speed.json"


def frames_per_second(episodes: int, length: int, shadows: bool) -> float:
    from envs.collect import main as collect

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config(Path(run_dir), [f"collect.episodes={episodes}", "collect.val_fraction=0.0",
                                             "collect.eval_episodes=1", f"collect.episode_length={length}",
                                             "collect.preview_episodes=0", f"env.shadows={shadows}",
                                             f"env.reflections={shadows}"])
        started = time.perf_counter()
        collect(cfg)
        elapsed = time.perf_counter() - started
    return (episodes + 1) * (length + 1) / elapsed


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks the script runs")
    args = parser.parse_args()
    episodes, length, repeats = (2, 10, 1) if args.smoke else (40, 100, 3)
    rows = {}
    for shadows in (False, True):
        rates = [frames_per_second(episodes, length, shadows) for _ in range(repeats)]
        rows["shadows_on" if shadows else "shadows_off"] = statistics.median(rates)
    print(f"collect reacher 64 px ({episodes} episodes x {length} steps, median of {repeats})")
    for name, rate in rows.items():
        print(f"  {name:<12} {rate:8.0f} frames/s")
    print(f"  speed-up from turning shadows/reflections off: {rows['shadows_off'] / rows['shadows_on']:.1f}x")
    atomic_write_json(RESULTS if not args.smoke else RESULTS.with_name("collect_speed_smoke.json"), {
        "frames_per_s": rows, "episodes": episodes, "episode_length": length, "repeats": repeats,
        "mujoco_gl": os.environ.get("MUJOCO_GL"), "machine": platform.platform(), "cpus": os.cpu_count(),
    })


if __name__ == "__main__":
    run_main(main)
