"""`jepa-agent evaluate`: goal reaching on held-out start/goal pairs (docs/protocol.md).

    jepa-agent evaluate experiment=reacher hydra.run.dir=runs/reacher          # the latent agent
    jepa-agent evaluate experiment=reacher evaluate.agent=oracle hydra.run.dir=runs/reacher
    jepa-agent evaluate experiment=reacher evaluate.seeds=[0,1,2,3] hydra.run.dir=runs/reacher   # one more seed

For every eval seed, `evaluate.pairs` start/goal pairs are drawn (`agent/pairs.py`): by default from the
held-out `eval` split, start = (episode, t), goal = the stored frame and state `goal_offset` steps later;
with `evaluate.goals=ogbench_tasks`, OGBench's own evaluation goals. The simulator is
reset to the start state and the agent has `budget` task steps; an episode succeeds when the task's
success predicate holds after any control step. Writes to `paths.evaluation/<agent>/`:
`metrics.json` (aggregate + resolved config), `episodes.jsonl` (one record per episode) and
`videos/*.mp4`, and `identity.json` (what the episodes depend on: `evaluation_identity`); the command
(`command`) then writes `paths.evaluation/report.html` for every agent evaluated there. Finished
episodes are kept: a rerun of the same identity resumes; one of another (a changed protocol or planner,
a retrained predictor) is refused, naming the differences, unless `run.overwrite=true` (start afresh).

An episode is keyed by (eval seed, pair index) and its draws depend on nothing else, so more
`evaluate.seeds` or `evaluate.pairs` extend an evaluation: only the new episodes run, and
`metrics.json` summarises the requested ones (`episodes.jsonl` keeps every finished episode).
Episode outcomes repeat exactly for the same batches (the same `batch_envs`, and the same pairs per
seed, as a resume keeps them); another batch rounds the predictor's batched matmuls differently,
which the planner's top-k selection can amplify into a different (equally valid) episode, so compare
agents by their intervals, not episode by episode. More seeds keep the batches; more pairs keep them
when the old count is a multiple of `batch_envs`.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agent.build import PLANNING_AGENTS, build_agent, check_agent_kind
from agent.episode_video import write_episode_video
from agent.episodes import run_batch
from agent.joint_hold import joint_hold_agents
from agent.pairs import GOAL_SOURCES, draw_pairs
from agent.report import write_report
from agent.stages import AMORTIZED_AGENTS, LATENT_AGENTS
from agent.statistics import bootstrap_interval, latency_summary
from envs import make_from_config
from bookkeeping.checks import check_int_list, check_ints, check_numbers
from bookkeeping.identity import config_identity
from bookkeeping.locks import directory_lock
from envs.dataset import EpisodeStore, read_manifest
from bookkeeping.io import (atomic_write_json, atomic_write_text, describe_differences, ensure_writable_dir, may_resume,
                     read_json, sha256_file)


IDENTITY_FILE = "identity.json"
SAMPLE_SIZE = ("seeds", "pairs")  # how many episodes: more of them extend an evaluation
SCORING_ONLY = ("angle_error",)  # env keys that change how success is scored, not what the agent sees
RECORD_FORMAT = 3  # 2: a record ends at the first success, closest distances over control steps, wall_time_s;
                   # 3: episodes run to the budget, `held` and `final_distance_at_budget`


def summarize(records: list[dict], cfg: DictConfig, kind: str, excluded: dict, success_threshold: float) -> dict:
    successes = [r["success"] for r in records]
    per_seed, per_task = {}, {}
    for r in records:
        per_seed.setdefault(str(r["seed"]), []).append(r["success"])
        if "task_id" in r:
            per_task.setdefault(str(r["task_id"]), []).append(r["success"])
    steps = [r["steps_to_success"] for r in records if r["success"]]
    away = [r["success"] for r in records if r["initial_distance"] >= success_threshold]
    latencies = [latency for r in records if r["index_in_batch"] == 0 for latency in r["plan_latencies_s"]]
    planner = OmegaConf.to_container(cfg.planner, resolve=True) if kind in PLANNING_AGENTS else None
    return {
        "agent": kind, "task": cfg.env.name, "planner": planner,
        "energy": energy_settings(cfg, kind),
        "episodes": len(records), "seeds": [int(s) for s in cfg.evaluate.seeds], "success_threshold": success_threshold,
        "success_rate": float(np.mean(successes)),
        "success_rate_ci95": bootstrap_interval(successes, cfg.evaluate.bootstrap_samples),
        # held: within the threshold at each of the budget's last hold_steps steps (reached counts any step)
        "success_rate_held": float(np.mean([r["held"] for r in records])),
        "success_rate_held_ci95": bootstrap_interval([r["held"] for r in records], cfg.evaluate.bootstrap_samples),
        "hold_steps": int(cfg.evaluate.hold_steps),
        "success_rate_per_seed": {seed: float(np.mean(values)) for seed, values in per_seed.items()},
        **({"success_rate_per_task": {task: float(np.mean(values)) for task, values in sorted(per_task.items())}}
           if per_task else {}),  # evaluate.goals=ogbench_tasks: per OGBench task_id
        "success_rate_wrapped": (float(np.mean([r["success_wrapped"] for r in records]))
                                 if "success_wrapped" in records[0] else None),
        "mean_final_distance": float(np.mean([r["final_distance"] for r in records])),
        "mean_min_distance": float(np.mean([r["min_distance"] for r in records])),
        "steps_to_success": {"mean": float(np.mean(steps)) if steps else None,
                             "median": float(np.median(steps)) if steps else None},
        "planning_latency": {**latency_summary(latencies), "envs_per_plan": int(cfg.evaluate.batch_envs)},
        "pairs_excluded": excluded,
        # goals already reached at the start: any agent, the random one too, almost surely succeeds at once
        "episodes_starting_at_goal": sum(r["initial_distance"] < success_threshold for r in records),
        # success where the goal needs the agent at all (the cube: pairs where the cube must move)
        "success_rate_starting_away": (float(np.mean(away)) if away else None),
        "success_rate_starting_away_ci95": bootstrap_interval(away, cfg.evaluate.bootstrap_samples) if away else None,
        "wall_time_s": float(sum(r["wall_time_s"] for r in records)),  # these episodes' time, however many runs
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def energy_settings(cfg: DictConfig, kind: str) -> dict | None:
    """The energy the agent planned with: the pixel agent's frame distance, the others' `evaluate.energy`."""
    if kind not in PLANNING_AGENTS:
        return None
    if kind == "pixel":
        return {"frame_distance": str(cfg.pixel.energy), "aggregate": str(cfg.evaluate.energy.aggregate)}
    return OmegaConf.to_container(cfg.evaluate.energy, resolve=True)


def agent_summary(metrics: dict, out_dir: Path) -> dict:
    """An agent's line in the run's `summary.json`: its headline metrics and its videos."""
    keys = ("success_rate", "success_rate_ci95", "success_rate_held", "success_rate_wrapped", "episodes",
            "planning_latency", "mean_min_distance", "episodes_starting_at_goal", "success_rate_starting_away")
    return {**{key: metrics.get(key) for key in keys},
            "videos": sorted(str(path) for path in (out_dir / "videos").glob("*.mp4"))}


def own_run_summary(cfg: DictConfig, evaluation_dir: Path) -> Path | None:
    """The run's `summary.json` when `evaluation_dir` is the run's own `eval/` and the run has one."""
    summary_path = Path(cfg.run_dir) / "summary.json"
    own = evaluation_dir.resolve() == (Path(cfg.run_dir) / "eval").resolve()
    return summary_path if own and summary_path.exists() else None


def refresh_run_summary(cfg: DictConfig, kind: str, metrics: dict, out_dir: Path) -> None:
    """An evaluation into the run's own `eval/` (run on its own, e.g. with more pairs) updates the
    agent's line in the run's `summary.json`, which would otherwise show the earlier figures."""
    summary_path = own_run_summary(cfg, out_dir.parent)
    if summary_path is None:
        return
    summary = read_json(summary_path)
    summary["agents"][kind] = agent_summary(metrics, out_dir)
    atomic_write_json(summary_path, summary)


def validate(cfg: DictConfig) -> None:
    check_ints(cfg.evaluate, "evaluate", ("pairs", "budget", "goal_offset", "batch_envs", "bootstrap_samples"))
    check_ints(cfg.evaluate, "evaluate", ("videos",), minimum=0)
    hold_steps = cfg.evaluate.hold_steps
    if isinstance(hold_steps, bool) or not isinstance(hold_steps, int) or not 1 <= hold_steps <= cfg.evaluate.budget:
        raise ValueError(f"evaluate.hold_steps={hold_steps!r} is invalid; expected an int in [1, evaluate.budget="
                         f"{cfg.evaluate.budget}]")
    check_numbers(cfg.evaluate, "evaluate", ("exclude_within",))
    check_numbers(cfg.evaluate.effector_hold, "evaluate.effector_hold", ("radius", "carried_radius", "integral_gain"))
    if not isinstance(cfg.evaluate.effector_hold.place_carried, bool):
        raise ValueError(f"evaluate.effector_hold.place_carried={cfg.evaluate.effector_hold.place_carried!r} is "
                         "invalid; expected true or false")
    joint_hold_agents(cfg.evaluate.joint_hold)
    check_int_list(cfg.evaluate, "evaluate", "seeds")
    goals = cfg.evaluate.goals
    if goals not in GOAL_SOURCES:
        raise ValueError(f"evaluate.goals={goals!r} is invalid; expected one of {list(GOAL_SOURCES)}")


def main(cfg: DictConfig, kind: str | None = None) -> dict:
    validate(cfg)
    kind = check_agent_kind(kind or cfg.evaluate.agent)  # before anything is made
    store = EpisodeStore(Path(cfg.paths.dataset) / "eval")  # before anything is made: a wrong run dir fails here
    check_env_matches_dataset(cfg, store)
    tasks = [make_from_config(cfg.env) for _ in range(cfg.evaluate.batch_envs)]
    try:
        agent = build_agent(cfg, tasks[0], kind)  # a bad planner setting or a missing predictor fails here
        out_dir = ensure_writable_dir(Path(cfg.paths.evaluation) / kind, "evaluation directory")
        with directory_lock(out_dir, "evaluation directory"):  # other evaluations of the run may run beside it
            metrics = run_episodes(cfg, kind, agent, out_dir, store, tasks)
    finally:
        for task in tasks:
            task.close()
    refresh_run_summary(cfg, kind, metrics, out_dir)
    low, high = metrics["success_rate_ci95"]
    print(f"{kind}: success {metrics['success_rate']:.1%} (95% CI {low:.1%}-{high:.1%}), held "
          f"{metrics['success_rate_held']:.1%}, over {metrics['episodes']} episodes -> {out_dir / 'metrics.json'}")
    if metrics["episodes_starting_at_goal"]:
        print(f"warning: {metrics['episodes_starting_at_goal']} of {metrics['episodes']} episodes start within the "
              "success threshold of their goal; evaluate.exclude_within (in the task's distance) skips such pairs",
              file=sys.stderr)
    return metrics


def command(cfg: DictConfig) -> dict:
    """`jepa-agent evaluate`: the episodes (`main`), then the evaluation directory's `report.html` (every
    agent evaluated there, `agent.report`), linked from the run's `summary.json` when it is the run's `eval/`."""
    metrics = main(cfg)
    report = write_report(cfg.paths.evaluation)
    summary_path = own_run_summary(cfg, Path(cfg.paths.evaluation))
    if summary_path is not None:
        atomic_write_json(summary_path, {**read_json(summary_path), "report": str(report)})
    print(f"report: {report}")
    return metrics


def check_env_matches_dataset(cfg: DictConfig, store: EpisodeStore) -> None:
    """Goal images come from the dataset and live frames from `cfg.env`: both must be rendered alike
    (and step alike), or the agent compares images of two cameras."""
    recorded = {k: v for k, v in (store.meta.get("env") or {}).items() if k not in SCORING_ONLY}
    current = {k: v for k, v in OmegaConf.to_container(cfg.env, resolve=True).items() if k not in SCORING_ONLY}
    if recorded and recorded != current:
        raise ValueError(f"env settings differ from those the dataset {str(store.split_dir)!r} was collected with "
                         f"({describe_differences(recorded, current)}); evaluate with the run's env settings")


def run_episodes(cfg: DictConfig, kind: str, agent, out_dir: Path, store: EpisodeStore, tasks: list) -> dict:
    """Run the episodes of `cfg.evaluate` not finished yet in `out_dir`; returns the metrics it writes."""
    seeds = [int(seed) for seed in cfg.evaluate.seeds]
    excluded, pairs_of_seed = {}, {}
    for seed in seeds:  # before anything is written: a protocol the eval split cannot serve fails here
        pairs_of_seed[seed], excluded[str(seed)] = draw_pairs(cfg, store, tasks[0], seed)
    identity = evaluation_identity(cfg, kind)
    records = load_finished(out_dir, identity, bool(cfg.run.overwrite))
    atomic_write_json(out_dir / IDENTITY_FILE, identity)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    def requested(record: dict) -> bool:  # finished episodes of other seeds or pairs stay in episodes.jsonl
        return record["seed"] in seeds and record["pair"] < cfg.evaluate.pairs

    done = {(r["seed"], r["pair"]) for r in records}
    progress = tqdm(total=len(seeds) * cfg.evaluate.pairs, initial=sum(map(requested, records)), unit="episode",
                    desc=f"evaluate {kind}", dynamic_ncols=True)
    with progress:
        for seed, pairs in pairs_of_seed.items():
            todo = [i for i in range(len(pairs)) if (seed, i) not in done]
            for start in range(0, len(todo), cfg.evaluate.batch_envs):
                indices = todo[start : start + cfg.evaluate.batch_envs]
                started = time.perf_counter()
                results = run_batch(agent, tasks[: len(indices)], [pairs[i] for i in indices], cfg.evaluate.budget,
                                    [seed * 100_003 + i for i in indices], [i < cfg.evaluate.videos for i in indices],
                                    hold_steps=int(cfg.evaluate.hold_steps))
                share = (time.perf_counter() - started) / len(indices)  # of the batch's wall time, per episode
                for position, (index, result) in enumerate(zip(indices, results)):
                    if result["frames"] is not None:
                        write_episode_video(out_dir / "videos" / f"seed{seed}_pair{index:03d}.mp4",
                                            np.stack(result["frames"]), result["goal_image"], result["captions"])
                    for key in ("frames", "captions", "goal_image"):
                        result.pop(key)
                    records.append({"seed": seed, "pair": index, "index_in_batch": position, "wall_time_s": share,
                                    **result})
                atomic_write_text(out_dir / "episodes.jsonl", "".join(json.dumps(r) + "\n" for r in records))
                progress.update(len(indices))
                progress.set_postfix(success=f"{np.mean([r['success'] for r in records if requested(r)]):.2f}")
    records = sorted(filter(requested, records), key=lambda r: (r["seed"], r["pair"]))
    metrics = summarize(records, cfg, kind, excluded, tasks[0].success_threshold)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def evaluation_identity(cfg: DictConfig, kind: str) -> dict:
    """What an evaluation's episodes depend on: the agent, the seed, the task, the eval split the pairs
    come from, the protocol but its sample size, the planner and MPC settings (planning agents), for the oracle
    the action block it plans in (`predictor.block`), for the pixel agent its model and energy, and for the
    latent agents the exact predictor: the hashes of its weights and readout, and its meta (which names the
    encoder and the block)."""
    sections = ["seed", "env", "evaluate"]
    if kind in PLANNING_AGENTS:
        sections += ["planner", "mpc"]
    if kind == "oracle":
        sections.append("predictor.block")
    eval_split = read_manifest(Path(cfg.paths.dataset) / "eval") or {"meta": None, "shards": []}
    inputs = {"record_format": RECORD_FORMAT, "agent": kind,
              "eval_split": {"meta": eval_split["meta"],
                             "episodes": sum(shard["episodes"] for shard in eval_split["shards"])}}
    if kind in LATENT_AGENTS:
        inputs["predictor_files"] = model_files(Path(cfg.paths.predictor))
    if kind == "pixel":  # the exact pixel model and its energy (world_model=pixel)
        sections.append("pixel.energy")
        inputs["pixel_model_files"] = model_files(Path(cfg.paths.pixel_model))
    if kind in AMORTIZED_AGENTS:
        from world_model.goal_policy import WEIGHTS_FILE

        inputs["policy_sha256"] = sha256_file(Path(cfg.paths.policy) / WEIGHTS_FILE)
        if cfg.evaluate.energy.goal_positions == "nearest_frames":  # the policy reads its goal there since 2026-12-07:
            inputs["policy_goal_positions"] = "nearest_frames"     # evaluations made before are not resumed
    ignoring = [f"evaluate.{key}" for key in SAMPLE_SIZE]
    # the joint hold's settings count for the agents it wraps (which other agents it names does not): evaluations of
    # the agents it does not wrap resume as before it existed
    ignoring.append("evaluate.joint_hold" if kind not in joint_hold_agents(cfg.evaluate.joint_hold)
                    else "evaluate.joint_hold.agents")
    return config_identity(cfg, sections, ignoring=ignoring, **inputs)


def model_files(model_dir: Path) -> dict[str, str]:
    """{file name: SHA-256} of a model folder's weights (*.safetensors) and meta.json."""
    return {path.name: sha256_file(path) for path in sorted(model_dir.iterdir())
            if path.suffix == ".safetensors" or path.name == "meta.json"}


def resumes(out_dir: Path, identity: dict, overwrite: bool) -> bool:
    """Whether `out_dir` holds episodes this identity resumes: True (made with it), False (none there, or made with
    other settings and `overwrite`: start afresh); ValueError naming the differences otherwise."""
    if not (out_dir / "episodes.jsonl").exists():
        return False
    identity_path = out_dir / IDENTITY_FILE
    saved = read_json(identity_path) if identity_path.exists() else {}
    return may_resume("evaluation", out_dir, saved, identity, overwrite,
                      elsewhere="keep both: paths.evaluation=<another directory>")


def evaluation_resumes(cfg: DictConfig, kind: str) -> bool:
    """`resumes` for `paths.evaluation/<kind>` under this config, checked before long work: by `run` before it
    skips a finished evaluation (what the code puts in the identity is not in the config it hashes), by the
    benchmarks before their first evaluation."""
    return resumes(Path(cfg.paths.evaluation) / kind, evaluation_identity(cfg, kind), bool(cfg.run.overwrite))


def load_finished(out_dir: Path, identity: dict, overwrite: bool) -> list[dict]:
    """Records of an earlier evaluation of this identity (resume). Of another: ValueError naming the
    differences, or with `overwrite` none, its files and videos deleted (as when nothing resumes)."""
    records_path = out_dir / "episodes.jsonl"
    if resumes(out_dir, identity, overwrite):
        return [json.loads(line) for line in records_path.read_text().splitlines() if line.strip()]
    for stale in ("episodes.jsonl", "metrics.json"):
        (out_dir / stale).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "videos", ignore_errors=True)
    return []
