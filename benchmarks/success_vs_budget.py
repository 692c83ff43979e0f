"""Success rate vs planning budget (CEM samples x iterations): latent agent vs oracle vs random.

Re-evaluates a finished run directory (`jepa-agent run ...`) under the same protocol with several
planner budgets, writes benchmarks/results/success_vs_budget.{json,png} and prints a table. The
random agent does not plan: it is drawn as a flat line. The plot also goes to the run's evaluation
report (`eval/plots/`, then `eval/report.html` is made again).

    python -m benchmarks.success_vs_budget runs/quick
    python -m benchmarks.success_vs_budget runs/quick --budgets 100x5 300x10 300x30 --pairs 20
    python -m benchmarks.success_vs_budget runs/quick --smoke
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from agent.run_config import load_run_config
from agent.evaluate import main as evaluate
from agent.report import PLOTS_DIR, write_report
from benchmarks.arguments import benchmark_parser, positive_int, run_main
from bookkeeping.io import atomic_save, atomic_write_bytes, atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def run_config(run_dir: Path, evaluation_dir: Path, samples: int, iterations: int, pairs: int):
    """The run's own config, with its paths re-rooted at run_dir and the given planner budget."""
    cfg = load_run_config(run_dir)
    cfg.paths.evaluation = str(evaluation_dir)
    cfg.planner.samples, cfg.planner.iterations = samples, iterations
    cfg.planner.top_k = min(cfg.planner.get("top_k", 30), max(1, samples // 10))
    cfg.evaluate.pairs, cfg.evaluate.videos = pairs, 0
    return cfg


def plot(rows: list[dict], random_rate: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for agent, marker in (("latent", "o"), ("oracle", "s")):
        points = [(r["rollouts_per_plan"], r["success_rate"]) for r in rows if r["agent"] == agent]
        axis.plot(*zip(*points), marker=marker, label=agent)
    axis.axhline(random_rate, color="gray", linestyle="--", label="random")
    axis.set_xscale("log")
    axis.set_xlabel("candidates scored per plan (samples x iterations)")
    axis.set_ylabel("success rate")
    axis.set_ylim(-0.02, 1.02)
    axis.legend()
    axis.set_title("success vs planning budget")
    figure.tight_layout()
    atomic_save(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    plt.close(figure)
    return path


def parse_budget(text: str) -> tuple[int, int]:
    """"300x30" -> (300, 30): CEM samples x iterations."""
    samples, _, iterations = text.partition("x")
    if not (samples.isdigit() and iterations.isdigit() and int(samples) >= 1 and int(iterations) >= 1):
        raise argparse.ArgumentTypeError(f"budget {text!r} is invalid; expected SAMPLESxITERATIONS, e.g. 300x30 "
                                         "(the run directory comes first: RUN_DIR --budgets ...)")
    return int(samples), int(iterations)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--budgets", nargs="+", type=parse_budget, default=[(30, 3), (100, 5), (300, 10), (300, 30)],
                        help="SAMPLESxITERATIONS, after the run directory")
    parser.add_argument("--pairs", type=positive_int, default=50)
    parser.add_argument("--smoke", action="store_true", help="two tiny budgets on 2 pairs")
    args = parser.parse_args()
    budgets = [(8, 1), (16, 2)] if args.smoke else args.budgets
    pairs = 2 if args.smoke else args.pairs
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for samples, iterations in budgets:
            for agent in ("latent", "oracle"):
                cfg = run_config(args.run_dir, Path(scratch) / f"{samples}x{iterations}", samples, iterations, pairs)
                metrics = evaluate(cfg, agent)
                rows.append({"agent": agent, "samples": samples, "iterations": iterations,
                             "rollouts_per_plan": samples * iterations, "success_rate": metrics["success_rate"],
                             "success_rate_ci95": metrics["success_rate_ci95"],
                             "seconds_per_plan": metrics["planning_latency"].get("mean_s")})
        random_metrics = evaluate(run_config(args.run_dir, Path(scratch) / "random", 1, 1, pairs), "random")
    suffix = "_smoke" if args.smoke else ""
    print(f"{'agent':8} {'budget':>8} {'success':>8} {'s/plan':>8}")
    for row in rows:
        print(f"{row['agent']:8} {row['samples']:>4}x{row['iterations']:<3} {row['success_rate']:8.1%} "
              f"{row['seconds_per_plan']:8.2f}")
    print(f"{'random':8} {'-':>8} {random_metrics['success_rate']:8.1%}")
    atomic_write_json(RESULTS / f"success_vs_budget{suffix}.json",
                      {"run_dir": str(args.run_dir), "pairs": pairs, "rows": rows,
                       "random_success_rate": random_metrics["success_rate"]})
    png = plot(rows, random_metrics["success_rate"], RESULTS / f"success_vs_budget{suffix}.png")
    print(f"plot: {png}")
    evaluation_dir = Path(load_run_config(args.run_dir).paths.evaluation)
    if list(evaluation_dir.glob("*/metrics.json")):  # the run's own evaluations: their report shows it too
        atomic_write_bytes(evaluation_dir / PLOTS_DIR / png.name, png.read_bytes())
        print(f"report: {write_report(evaluation_dir)}")


if __name__ == "__main__":
    run_main(main)
