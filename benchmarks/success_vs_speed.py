"""Success rate vs seconds per action for every agent of a finished run: CEM, MPPI, amortized (the goal
policy alone), amortized + CEM (the policy's chunk as CEM's initial mean, fewer iterations), the same
CEM cold-started at those iterations, the simulator oracle, and the random floor.

Evaluates under the run's own protocol (its pairs, seeds and batches) through `agent.evaluate`. The
agents at the run's own settings resume from the run's `eval/<agent>/` (nothing runs when they are
there); the others go to `DIR/eval_speed/<label>/`, so a rerun resumes too. The goal policy must be
trained first (`jepa-agent policy ...`, or `run` with an amortized agent in `run.agents`). Writes
benchmarks/results/success_vs_speed_<task>.{json,png} and prints a table.

Seconds per action: the median planner (or policy) call, per env of the batch, divided by the task
steps each call decides (`execute_blocks x block` for MPC, one block for the policy); the encoder's
embedding of each frame, which every latent agent pays, is not counted. `policy_call_ms_b1`: one
policy call for one env, the median of 200 in this process.

    python -m benchmarks.success_vs_speed runs/quick
    python -m benchmarks.success_vs_speed runs/quick --warm-iterations 3 --pairs 20
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from agent.build import load_run_config
from agent.config import CONFIG_DIR
from agent.evaluate import main as evaluate
from benchmarks.arguments import benchmark_parser, positive_int, run_main
from bookkeeping.io import atomic_save, atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_PLANNER_KEYS = ("horizon", "execute_blocks", "shrink_horizon", "samples", "iterations", "init_std", "min_std",
                       "low", "high", "seed")


def planner_node(run_planner, name: str):
    """The run's planner, or planner `name` (configs/planner/) with the run's shared settings."""
    if name == run_planner.name:
        return run_planner
    node = OmegaConf.load(CONFIG_DIR / "planner" / f"{name}.yaml")
    for key in SHARED_PLANNER_KEYS:
        if key in run_planner:
            node[key] = run_planner[key]
    return node


def variants(cfg, warm_iterations: list[int]) -> list[tuple[str, str, dict]]:
    """(label, agent kind, planner overrides) of every point; {} keeps the run's planner."""
    rows = [("cem", "latent", {}), ("mppi", "latent", {"name": "mppi"}), ("amortized", "amortized", {}),
            ("oracle", "oracle", {}), ("random", "random", {})]
    for iterations in warm_iterations:
        rows += [(f"amortized_cem_{iterations}it", "amortized_cem", {"iterations": iterations}),
                 (f"cem_{iterations}it", "latent", {"iterations": iterations})]
    return rows


def evaluation_config(run_dir: Path, kind: str, label: str, planner: dict, pairs: int | None):
    cfg = load_run_config(run_dir)
    if planner:
        cfg.planner = planner_node(cfg.planner, planner.get("name", cfg.planner.name))
        cfg.planner.iterations = planner.get("iterations", cfg.planner.iterations)
        cfg.paths.evaluation = str(run_dir / "eval_speed" / label)
    elif kind == "amortized_cem":
        cfg.paths.evaluation = str(run_dir / "eval_speed" / label)
    if pairs:
        cfg.evaluate.pairs = pairs
    cfg.evaluate.videos = 0 if planner or pairs else cfg.evaluate.videos
    return cfg


def seconds_per_action(metrics: dict, cfg, kind: str) -> float | None:
    """Median planner/policy call per env, per task step it decides (module docstring)."""
    latency = metrics["planning_latency"]
    if not latency.get("count"):
        return None
    block = int(cfg.predictor.block)
    steps = block if kind == "amortized" else int(cfg.planner.get("execute_blocks", cfg.planner.horizon)) * block
    return latency["p50_s"] / latency["envs_per_plan"] / steps


def policy_call_ms(run_dir: Path) -> float:
    """One goal-policy call for one env (readout of the frame and the MLP), median of 200, in ms."""
    import envs
    from agent.build import load_agent

    cfg = load_run_config(run_dir)
    task = envs.make_from_config(cfg.env)
    try:
        agent = load_agent(run_dir, "amortized", task=task)
        observation, info = task.reset(seed=0)
        agent.reset(observation["pixels"][None], None, seeds=[0])
        agent.act(observation["pixels"][None], info["state"][None])  # observes the frame
        times = []
        for _ in range(200):
            started = time.perf_counter()
            agent.propose()
            times.append(time.perf_counter() - started)
    finally:
        task.close()
    return float(np.median(times) * 1000)


def plot(rows: list[dict], random_rate: float, task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        if row["seconds_per_action"] is None:
            continue
        low, high = row["success_rate_ci95"]
        axis.errorbar(row["seconds_per_action"], row["success_rate"], yerr=[[row["success_rate"] - low],
                      [high - row["success_rate"]]], marker="o", capsize=3, label=row["label"])
    axis.axhline(random_rate, color="gray", linestyle="--", label="random")
    axis.set_xscale("log")
    axis.set_xlabel("seconds per action per env (median planner / policy call)")
    axis.set_ylabel("success rate (95% CI)")
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=8)
    axis.set_title(f"{task}: success vs decision time")
    figure.tight_layout()
    atomic_save(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    plt.close(figure)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--warm-iterations", nargs="+", type=positive_int, default=None,
                        help="CEM iterations of amortized + CEM (and of the cold CEM beside it); "
                             "default: a third of the run's")
    parser.add_argument("--pairs", type=positive_int, default=None, help="default: the run's evaluate.pairs")
    args = parser.parse_args()
    cfg = load_run_config(args.run_dir)
    warm = args.warm_iterations or [max(1, int(cfg.planner.iterations) // 3)]
    rows = []
    for label, kind, planner in variants(cfg, warm):
        run_cfg = evaluation_config(args.run_dir, kind, label, planner, args.pairs)
        metrics = evaluate(run_cfg, kind)
        rows.append({"label": label, "agent": kind, "planner": None if kind in ("random", "amortized") else
                     OmegaConf.to_container(run_cfg.planner, resolve=True),
                     "success_rate": metrics["success_rate"], "success_rate_ci95": metrics["success_rate_ci95"],
                     "success_rate_held": metrics["success_rate_held"], "episodes": metrics["episodes"],
                     "planning_latency": metrics["planning_latency"],
                     "seconds_per_action": seconds_per_action(metrics, run_cfg, kind),
                     "evaluation": str(Path(run_cfg.paths.evaluation) / kind)})
    random_rate = next(row["success_rate"] for row in rows if row["agent"] == "random")
    call_ms = policy_call_ms(args.run_dir)
    print(f"{'agent':22} {'success':>8} {'95% CI':>13} {'s/action':>10}")
    for row in rows:
        speed = "-" if row["seconds_per_action"] is None else f"{row['seconds_per_action']:.5f}"
        low, high = row["success_rate_ci95"]
        print(f"{row['label']:22} {row['success_rate']:8.1%} {f'{low:.0%}-{high:.0%}':>13} {speed:>10}")
    print(f"goal policy, one call for one env: {call_ms:.2f} ms (median of 200)")
    name = f"success_vs_speed_{cfg.env.name}"
    atomic_write_json(RESULTS / f"{name}.json", {"run_dir": str(args.run_dir), "task": cfg.env.name, "rows": rows,
                                                 "policy_call_ms_b1": call_ms})
    plot(rows, random_rate, cfg.env.name, RESULTS / f"{name}.png")
    print(f"plot: {RESULTS / f'{name}.png'}")


if __name__ == "__main__":
    run_main(main)
