"""Pixels or latents (issue 27) in one command: on one preset and one dataset, (a) the latent agent with the latent
distance alone as its energy, (b) the latent agent as the preset runs it, (c) the pixel world model's agent (frame
distance to the goal image), all on the same pairs and seeds with the same planner, beside the preset's other
agents (goal policy, random, oracle, where its `run.agents` has them): success with its 95% interval, held,
seconds per plan, training time, and each model's rollout error against copying the last frame.

In the run directory, it runs what is not done yet (each command resumes, as every `jepa-agent` command does):

    jepa-agent run OVERRIDES                                          (b) and the preset's agents -> DIR/eval/
    jepa-agent evaluate OVERRIDES evaluate.agent=latent LATENT_ONLY paths.evaluation=DIR/eval_latent_energy   (a)
    jepa-agent diagnose OVERRIDES                                     the latent predictor's rollout error (once)
    jepa-agent run OVERRIDES world_model=pixel 'run.agents=[pixel]'   (c) and its rollout error

(LATENT_ONLY: every energy term but the latent distance set to 0, and no joint hold), then writes
DIR/pixels_or_latents.json and DIR/pixels_or_latents.md (the table, also printed). OVERRIDES go to every command,
so all agents plan alike:

    python -m benchmarks.pixels_or_latents experiment=quick threads=2 'evaluate.seeds=[0,1,2]' hydra.run.dir=runs/quick
    python -m benchmarks.pixels_or_latents experiment=point_mass threads=2 'evaluate.seeds=[0,1,2]' \\
        mpc.execute_blocks=5 evaluate.energy.goal_positions=readout evaluate.energy.hold_radius=0 \\
        pixel.train.epochs=15 hydra.run.dir=runs/point_mass

Rollout errors are the model's error over copying the last frame, per horizon block (< 1: better than copying):
the latent predictor's in latent L2 distance (`jepa-agent diagnose`), the pixel model's in pixel MSE
(`jepa-agent imagine`).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.config import compose_config
from benchmarks.arguments import run_main
from bookkeeping.io import atomic_write_json, atomic_write_text, read_json

LATENT_ONLY = ("evaluate.energy.latent_weight=1", "evaluate.energy.position_weight=0",
               "evaluate.energy.latent_readout_weight=0", "evaluate.energy.reach_weight=0",
               "evaluate.energy.hold_radius=0", "evaluate.joint_hold.agents=[]")  # no PD control either
LATENT_ENERGY_DIR = "eval_latent_energy"  # (a)'s evaluation, in the run directory
LATENT_TRAINING = ("pretrain", "embed", "train")
ROWS = (  # label, its own evaluation folder (None: the run's paths.evaluation), agent, training stages, required
    ("(a) latent, latent distance alone", LATENT_ENERGY_DIR, "latent", LATENT_TRAINING, True),
    ("(b) latent, as the preset runs it", None, "latent", LATENT_TRAINING, True),
    ("(b) goal policy, as the preset runs it", None, "amortized", (*LATENT_TRAINING, "policy"), False),
    ("(c) pixel, frame distance", None, "pixel", ("train_pixel",), True),
    ("random", None, "random", (), False),
    ("oracle (the simulator)", None, "oracle", (), False),  # where the preset's run.agents has them
)
ROLLOUT_BLOCKS = 5  # rollout error reported at horizons 1..5 blocks


def jepa_agent(*args: str) -> None:
    """`jepa-agent ARGS` in a subprocess, its output shown; a failure stops here with its own one-line error."""
    print(f"[pixels_or_latents] jepa-agent {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "agent.cli", *args])
    if result.returncode != 0:
        raise ValueError(f"`jepa-agent {args[0]}` failed (exit status {result.returncode}); its error is above")


def run_directory(overrides: list[str]) -> Path:
    values = [override.split("=", 1)[1] for override in overrides if override.startswith("hydra.run.dir=")]
    if not values or not values[-1]:
        raise ValueError("no run directory: pass hydra.run.dir=DIR (the latent run's directory; the pixel model and "
                         "the table go there too)")
    return Path(values[-1])


def rollout_ratios(path: Path, model_key: str, copy_key: str) -> list[float] | None:
    """model error / copy-last error at horizons 1..ROLLOUT_BLOCKS, from a diagnostics or imagination file."""
    if not path.is_file():
        return None
    errors = read_json(path)
    errors = errors.get("rollout_error", errors)
    return [model / copy for model, copy in zip(errors[model_key][:ROLLOUT_BLOCKS], errors[copy_key][:ROLLOUT_BLOCKS])]


def table_rows(run_dir: Path, cfg) -> list[dict]:
    stages = read_json(run_dir / "stages.json")
    latent_rollout = rollout_ratios(Path(cfg.diagnose.output_dir) / "diagnostics.json", "model", "copy_last")
    pixel_rollout = rollout_ratios(Path(cfg.paths.pixel_model) / "imagination" / "rollout_error.json", "model_mse",
                                   "copy_last_mse")
    rows = []
    for label, folder, agent, training, required in ROWS:
        evaluation = (run_dir / folder if folder else Path(cfg.paths.evaluation)) / agent
        if not required and not (evaluation / "metrics.json").is_file():
            continue
        metrics = read_json(evaluation / "metrics.json")
        latency = metrics.get("planning_latency") or {}
        rows.append({"label": label, "agent": agent, "evaluation": str(evaluation),
                     "episodes": metrics["episodes"], "success_rate": metrics["success_rate"],
                     "success_rate_ci95": metrics["success_rate_ci95"],
                     "success_rate_held": metrics["success_rate_held"],
                     "seconds_per_plan_p50": latency.get("p50_s"), "envs_per_plan": latency.get("envs_per_plan"),
                     "training_s": (sum(stages.get(stage, {}).get("wall_time_s", 0.0) for stage in training)
                                    if training else None),
                     "rollout_error_vs_copy_last": {"latent": latent_rollout, "pixel": pixel_rollout}.get(agent)})
    return rows


def markdown(rows: list[dict], task: str) -> str:
    lines = [f"Pixels or latents on `{task}` (benchmarks/pixels_or_latents.py)", "",
             "| agent | success [95% CI] | held | s per plan (envs) | training | rollout error / copy-last, "
             f"1..{ROLLOUT_BLOCKS} blocks | episodes |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        low, high = row["success_rate_ci95"]
        seconds = row["seconds_per_plan_p50"]
        plan = "" if seconds is None else f"{seconds:.2f} ({row['envs_per_plan']})"
        training = "" if row["training_s"] is None else f"{row['training_s']:.0f} s"
        rollout = ", ".join(f"{ratio:.2f}" for ratio in row["rollout_error_vs_copy_last"] or [])
        lines.append(f"| {row['label']} | {row['success_rate']:.1%} [{low:.1%}-{high:.1%}] | "
                     f"{row['success_rate_held']:.1%} | {plan} | {training} | {rollout} | {row['episodes']} |")
    return "\n".join(lines) + "\n"


def main(overrides: list[str] | None = None) -> None:
    overrides = list(sys.argv[1:] if overrides is None else overrides)
    if not overrides or overrides[0] in ("-h", "--help"):
        print(__doc__)
        return
    flags = [argument for argument in overrides if argument.startswith("-")]
    if flags:
        raise ValueError(f"{flags[0]!r} is not an override; expected `jepa-agent run` overrides only (--help shows "
                         "examples)")
    run_dir = run_directory(overrides)
    cfg = compose_config(run_dir, [o for o in overrides if not o.startswith("hydra.")])  # a bad override fails here
    jepa_agent("run", *overrides)
    jepa_agent("evaluate", *overrides, "evaluate.agent=latent", *LATENT_ONLY,
               f"paths.evaluation={run_dir / LATENT_ENERGY_DIR}")
    diagnostics, predictor = Path(cfg.diagnose.output_dir) / "diagnostics.json", Path(cfg.paths.predictor)
    if not diagnostics.is_file() or diagnostics.stat().st_mtime < (predictor / "predictor.safetensors").stat().st_mtime:
        jepa_agent("diagnose", *overrides)  # not yet diagnosed, or the predictor trained again since
    jepa_agent("run", *overrides, "world_model=pixel", "run.agents=[pixel]")
    rows = table_rows(run_dir, cfg)
    table = markdown(rows, cfg.env.name)
    atomic_write_json(run_dir / "pixels_or_latents.json", {"task": cfg.env.name, "overrides": overrides, "rows": rows})
    atomic_write_text(run_dir / "pixels_or_latents.md", table)
    print(table)
    print(f"table: {run_dir / 'pixels_or_latents.md'} (rows in pixels_or_latents.json)")


if __name__ == "__main__":
    run_main(main)
