"""Success over a sweep's runs: per agent, the mean and spread of the success rate across run directories
(a multirun over seeds, say), the pooled rate over all their episodes, and each run's seed and command.
Reads each run's `summary.json`, `config.yaml` and `command.txt`; prints a table and writes JSON.

    python -m benchmarks.sweep_summary multirun/2026-11-22/15-00-00/*/      # the jobs of one sweep (not multirun.yaml)
    python -m benchmarks.sweep_summary runs/quick runs/quick_seed1 --output runs/quick_sweep.json
"""
from __future__ import annotations

import statistics
from pathlib import Path

from omegaconf import OmegaConf

from benchmarks.arguments import benchmark_parser, run_main
from bookkeeping.io import atomic_write_json, read_json

RESULTS = Path(__file__).resolve().parent / "results" / "sweep_summary.json"


def read_run(run_dir: Path) -> dict:
    """One run's agents' success rates and episode counts, its seed and the command that made it."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} has no summary.json; is it a directory of `jepa-agent run`?")
    summary = read_json(summary_path)
    config_path, command_path = run_dir / "config.yaml", run_dir / "command.txt"
    return {"run_dir": str(run_dir), "task": summary["task"],
            "seed": int(OmegaConf.load(config_path).seed) if config_path.is_file() else None,
            "command": command_path.read_text().strip() if command_path.is_file() else None,
            "agents": {agent: {"success_rate": metrics["success_rate"], "episodes": metrics["episodes"]}
                       for agent, metrics in summary["agents"].items()}}


def aggregate(runs: list[dict]) -> dict:
    """Per agent over the runs that evaluated it: mean, standard deviation (over runs), min, max of the
    success rate, and the pooled rate (all episodes together)."""
    agents: dict[str, dict] = {}
    for agent in dict.fromkeys(agent for run in runs for agent in run["agents"]):
        results = [run["agents"][agent] for run in runs if agent in run["agents"]]
        rates = [result["success_rate"] for result in results]
        episodes = sum(result["episodes"] for result in results)
        successes = sum(result["success_rate"] * result["episodes"] for result in results)
        agents[agent] = {"runs": len(rates), "mean": statistics.fmean(rates),
                         "std": statistics.stdev(rates) if len(rates) > 1 else 0.0, "min": min(rates),
                         "max": max(rates), "episodes": episodes, "pooled": successes / episodes}
    return agents


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (each with a summary.json)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = [read_run(run_dir) for run_dir in args.run_dirs]
    tasks = sorted({run["task"] for run in runs})
    if len(tasks) > 1:
        raise ValueError(f"the runs are of several tasks ({', '.join(tasks)}); expected runs of one task")
    agents = aggregate(runs)
    print(f"{'agent':<8} {'runs':>4} {'mean':>7} {'std':>7} {'min':>7} {'max':>7} {'pooled':>7} {'episodes':>9}")
    for agent, row in agents.items():
        print(f"{agent:<8} {row['runs']:>4} {row['mean']:>7.1%} {row['std']:>7.1%} {row['min']:>7.1%} "
              f"{row['max']:>7.1%} {row['pooled']:>7.1%} {row['episodes']:>9}")
    atomic_write_json(args.output, {"task": tasks[0], "agents": agents, "runs": runs})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_main(main)
