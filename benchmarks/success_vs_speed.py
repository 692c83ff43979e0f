"""Success rate vs seconds per action for every agent of a finished run: CEM, MPPI, amortized (the goal
policy alone), amortized + CEM (the policy's chunk as CEM's initial mean, fewer iterations), the same
CEM cold-started at those iterations, the simulator oracle, and the random floor.

Evaluates under the run's own protocol (its pairs, seeds and batches) through `agent.evaluate`. The
agents at the run's own settings resume from the run's `eval/<agent>/` (nothing runs when they are
there; more `--seeds` or `--pairs` extend them); the others, and fewer seeds or pairs than the run's own
(which would shrink its `metrics.json` to them), go to `DIR/eval_speed/<label>/`, so a rerun resumes too. The
goal policy must be trained first (`jepa-agent policy ...`, or `run` with an amortized agent in `run.agents`). Writes
benchmarks/results/success_vs_speed_<task>.{json,png} (or `--output`'s JSON, its PNG beside it) and prints a table
with reached and held. Agents the run's `evaluate.joint_hold` names hold the goal's joints by PD control (labelled
"+ hold"); the cold CEM rows hold exactly when amortized + CEM does, so that the two differ in the warm start alone.

Seconds per action (plotted): the median of `--repeats` planner calls (at least 100 of the policy's: each
row's `timed_calls` in the JSON) for one env, timed back to back in this process (eager), divided by the task
steps each call decides (`mpc.execute_blocks x block` for MPC, one block for the policy). The encoder's
embedding of each frame, which every latent agent pays, is not counted. `seconds_per_action_in_evaluation` is
the same from the evaluation's own median call (per env of its batch): on a shared machine it mostly measures the
other jobs.

    python -m benchmarks.success_vs_speed runs/quick
    python -m benchmarks.success_vs_speed runs/quick --warm-iterations 3 --warm-std 0.5 --pairs 20 --threads 1
    python -m benchmarks.success_vs_speed runs/quick --seeds 0 1 2 --threads 2   # n = 150 on `quick`
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from agent.run_config import load_run_config
from agent.config import CONFIG_DIR
from agent.evaluate import evaluation_resumes, main as evaluate
from benchmarks.arguments import benchmark_parser, non_negative_int, positive_float, positive_int, run_main
from bookkeeping.io import atomic_save, atomic_write_json
from world_model.goal_policy import load_goal_policy

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_PLANNER_KEYS = ("horizon", "samples", "iterations", "init_std", "min_std", "low", "high", "seed")


def planner_node(run_planner, name: str):
    """The run's planner, or planner `name` (configs/planner/) with the run's shared settings."""
    if name == run_planner.name:
        return run_planner
    node = OmegaConf.load(CONFIG_DIR / "planner" / f"{name}.yaml")
    for key in SHARED_PLANNER_KEYS:
        if key in run_planner:
            node[key] = run_planner[key]
    return node


def variants(cfg, warm_iterations: list[int], warm_stds: list[float]) -> list[tuple[str, str, dict, str | None]]:
    """(label, agent kind, planner overrides, the kind whose joint hold it takes) of every point; {} keeps the run's
    planner; None: its own `evaluate.joint_hold` (the cold CEM rows hold as amortized + CEM does: the two differ in
    the warm start alone)."""
    rows = [("cem", "latent", {}, None), ("mppi", "latent", {"name": "mppi"}, None),
            ("amortized", "amortized", {}, None), ("oracle", "oracle", {}, None), ("random", "random", {}, None)]
    for iterations in warm_iterations:
        rows += [(f"amortized_cem_{iterations}it", "amortized_cem", {"iterations": iterations}, None),
                 (f"cem_{iterations}it", "latent", {"iterations": iterations}, "amortized_cem")]
        rows += [(f"amortized_cem_{iterations}it_std{std:g}", "amortized_cem",
                  {"iterations": iterations, "warm_start_std": std}, None) for std in warm_stds]
    return rows


def evaluation_config(run_dir: Path, kind: str, label: str, planner: dict, pairs: int | None,
                      seeds: list[int] | None, hold_as: str | None = None):
    cfg = load_run_config(run_dir)
    held_agents = list(cfg.evaluate.joint_hold.agents)
    if hold_as is not None and (hold_as in held_agents) != (kind in held_agents):  # the joint hold of `hold_as`
        cfg.evaluate.joint_hold.agents = ([*held_agents, kind] if hold_as in held_agents
                                          else [agent for agent in held_agents if agent != kind])
    if planner:
        cfg.planner = planner_node(cfg.planner, planner.get("name", cfg.planner.name))
        cfg.planner.iterations = planner.get("iterations", cfg.planner.iterations)
        if "warm_start_std" in planner:
            cfg.planner.warm_start_std = planner["warm_start_std"]
    fewer = (pairs and pairs < cfg.evaluate.pairs) or (seeds and not set(cfg.evaluate.seeds) <= set(seeds))
    if planner or kind == "amortized_cem" or fewer:  # not the run's own evaluation, or a part of it
        cfg.paths.evaluation = str(run_dir / "eval_speed" / label)
    if pairs:
        cfg.evaluate.pairs = pairs
    if seeds:
        cfg.evaluate.seeds = seeds
    cfg.evaluate.videos = 0 if planner or pairs or seeds else cfg.evaluate.videos
    return cfg


def seconds_per_action(metrics: dict, cfg, kind: str) -> float | None:
    """From the evaluation: its median planner/policy call per env of the batch, per task step it decides
    (the cores' load during that evaluation included)."""
    latency = metrics["planning_latency"]
    if not latency.get("count"):
        return None
    return latency["p50_s"] / latency["envs_per_plan"] / steps_per_decision(cfg, kind)


def timed_seconds_per_action(run_cfg, kind: str, repeats: int) -> tuple[float, int]:
    """The median of `repeats` decisions (planner or policy calls; at least 100 of the policy's) for one env,
    timed back to back in this process (eager: evaluate.compile off), per task step each decides. Goal: the start
    frame itself (the energy's landscape does not change its cost). -> (seconds per action, calls timed)"""
    import envs
    from agent.build import build_agent

    cfg = run_cfg.copy()
    cfg.evaluate.compile = False
    cfg.evaluate.joint_hold.agents = []  # the planner or policy alone: a start frame as the goal would latch the hold
    task = envs.make_from_config(cfg.env)
    try:
        agent = build_agent(cfg, task, kind)
        latencies = []
        repeats = max(repeats, 100) if kind == "amortized" else repeats  # a call of about a millisecond: many
        for seed in range(repeats + 1):  # the first call warms up (allocations, lazy imports)
            observation, info = task.reset(seed=seed)
            pixels, states = observation["pixels"][None], info["state"][None]
            agent.reset(pixels, states, seeds=[seed])
            agent.act(pixels, states)
            latencies.append(agent.plans[-1].latency_s)
    finally:
        task.close()
    return float(np.median(latencies[1:])) / steps_per_decision(cfg, kind), repeats


def steps_per_decision(cfg, kind: str) -> int:
    """Task steps one planner (policy) call decides: mpc.execute_blocks x block for MPC, one block for the policy."""
    block = int(cfg.predictor.block)
    return block if kind == "amortized" else int(cfg.mpc.execute_blocks) * block


def goal_policy_record(cfg) -> dict:
    """The run's goal policy, which the amortized rows measure: its training settings and weights' sha256
    (refused, one line, when missing or trained on another predictor)."""
    from bookkeeping.io import sha256_file
    from world_model.goal_policy import WEIGHTS_FILE as POLICY_WEIGHTS
    from world_model.predictor import WEIGHTS_FILE

    _, meta = load_goal_policy(cfg.paths.policy, predictor_sha256=sha256_file(Path(cfg.paths.predictor) / WEIGHTS_FILE))
    return {"settings": meta.get("identity", {}).get("policy"),
            "sha256": sha256_file(Path(cfg.paths.policy) / POLICY_WEIGHTS),
            "goal_positions": cfg.evaluate.energy.goal_positions}  # where it reads the goal's positions


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
                      [high - row["success_rate"]]], marker="o", capsize=3,
                      label=row["label"] + (" + hold" if row.get("joint_hold") else ""))
    axis.axhline(random_rate, color="gray", linestyle="--", label="random")
    axis.set_xscale("log")
    axis.set_xlabel("seconds per action, one env (median planner / policy call, eager)")
    axis.set_ylabel("success rate (95% CI)")
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=8)
    axis.set_title(f"{task}: success vs seconds per action")
    figure.tight_layout()
    atomic_save(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    plt.close(figure)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--warm-iterations", nargs="+", type=positive_int, default=None,
                        help="CEM iterations of amortized + CEM (and of the cold CEM beside it); "
                             "default: a third of the run's")
    parser.add_argument("--warm-std", nargs="*", type=positive_float, default=[],
                        help="also amortized + CEM with these first-iteration stds around the policy's chunk")
    parser.add_argument("--pairs", type=positive_int, default=None, help="default: the run's evaluate.pairs")
    parser.add_argument("--seeds", nargs="+", type=non_negative_int, default=None,
                        help="eval seeds (default: the run's evaluate.seeds); more of them extend the run's own "
                             "evaluations, as `jepa-agent evaluate 'evaluate.seeds=[...]'` does")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed decisions per agent (median)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the JSON (the PNG beside it); default: benchmarks/results/success_vs_speed_<task>.json")
    args = parser.parse_args()
    if args.output is not None and args.output.suffix != ".json":
        parser.error(f"argument --output: {str(args.output)!r} is invalid; expected a path ending in .json")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seeds and len(set(args.seeds)) < len(args.seeds):
        parser.error(f"argument --seeds: {args.seeds} is invalid; expected distinct seeds")
    cfg = load_run_config(args.run_dir)
    goal_policy = goal_policy_record(cfg)  # before minutes of evaluations: the policy must be trained, on this run
    warm = args.warm_iterations or [max(1, int(cfg.planner.iterations) // 3)]
    points = [(label, kind, evaluation_config(args.run_dir, kind, label, planner, args.pairs, args.seeds, hold_as))
              for label, kind, planner, hold_as in variants(cfg, warm, args.warm_std)]
    for _, kind, run_cfg in points:  # an evaluation made with other settings is refused before hours of the others
        evaluation_resumes(run_cfg, kind)
    rows = []
    for label, kind, run_cfg in points:
        metrics = evaluate(run_cfg, kind)
        rows.append({"label": label, "agent": kind, "planner": None if kind in ("random", "amortized") else
                     OmegaConf.to_container(run_cfg.planner, resolve=True),
                     "success_rate": metrics["success_rate"], "success_rate_ci95": metrics["success_rate_ci95"],
                     "success_rate_held": metrics["success_rate_held"], "episodes": metrics["episodes"],
                     "joint_hold": kind in run_cfg.evaluate.joint_hold.agents,  # PD control at the goal's joints
                     "planning_latency": metrics["planning_latency"],
                     "seconds_per_action_in_evaluation": seconds_per_action(metrics, run_cfg, kind),
                     "evaluation": str(Path(run_cfg.paths.evaluation) / kind)})
        timed = (None, 0) if kind == "random" else timed_seconds_per_action(run_cfg, kind, args.repeats)
        rows[-1].update(seconds_per_action=timed[0], timed_calls=timed[1])
    random_rate = next(row["success_rate"] for row in rows if row["agent"] == "random")
    print(f"{'agent':22} {'success':>8} {'95% CI':>13} {'held':>6} {'s/action':>10} {'in eval':>10}")
    for row in rows:
        speed, in_eval = (("-" if value is None else f"{value:.5f}")
                          for value in (row["seconds_per_action"], row["seconds_per_action_in_evaluation"]))
        low, high = row["success_rate_ci95"]
        label = row["label"] + (" + hold" if row["joint_hold"] else "")
        print(f"{label:22} {row['success_rate']:8.1%} {f'{low:.0%}-{high:.0%}':>13} {row['success_rate_held']:6.1%} "
              f"{speed:>10} {in_eval:>10}")
    output = args.output or RESULTS / f"success_vs_speed_{cfg.env.name}.json"
    atomic_write_json(output, {"run_dir": str(args.run_dir), "task": cfg.env.name,
                               "seeds": list(args.seeds or cfg.evaluate.seeds), "threads": torch.get_num_threads(),
                               "goal_policy": goal_policy, "rows": rows})
    plot(rows, random_rate, cfg.env.name, output.with_suffix(".png"))
    print(f"plot: {output.with_suffix('.png')}")


if __name__ == "__main__":
    run_main(main)
