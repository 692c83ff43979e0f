"""`jepa-agent run`: from pixels to goal reaching in one command, resumable.

    jepa-agent run experiment=quick hydra.run.dir=runs/quick          # the README's main job
    jepa-agent run experiment=reacher hydra.run.dir=runs/reacher
    jepa-agent run experiment=reacher encoder=vjepa2_vitl hydra.run.dir=runs/official   # official weights
    jepa-agent run experiment=reacher run.overwrite=true hydra.run.dir=runs/reacher    # accept a changed config

Stages: collect -> pretrain (skipped for official V-JEPA 2 weights) -> embed -> train -> evaluate
(latent agent, then the random and oracle baselines under the same protocol). With `world_model=pixel`
(issue 27): collect -> train_pixel -> imagine_pixel -> evaluate (pixel, random, oracle), into the same
run directory as the latent agent's if wanted (the summary then lists both); the stages, their sections and
the agents that need them: agent/stages.py. Each stage records in
`DIR/stages.json` a hash of the config sections it depends on; a rerun skips a finished stage whose
hash matches, both there and in the `config.yaml` the stage wrote beside its outputs, and whose
last output is there: deleted outputs are made again, and outputs remade by a stage run on its own
with other settings are noticed (that stage then refuses, naming the keys, unless run.overwrite=true), and so is
a finished evaluation whose identity (`agent.evaluate.evaluation_identity`: the model's weights, what the code
reads) is no longer this config's.
A stage killed midway resumes from its own checkpoints. Every rerun also verifies the dataset's checksums
and collects the episodes of a damaged shard again. A run directory made by a different config is
refused, naming the differing keys, unless `run.overwrite=true`; then only the stages whose inputs
changed run again. More (or fewer) `evaluate.seeds` or `evaluate.pairs` need no overwrite: the
evaluations grow (or summarise a subset).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from agent.config import command_line
from agent.evaluate import agent_summary, evaluation_resumes
from agent.report import write_report
from agent.stages import AGENTS, STAGES, evaluation_sections
from bookkeeping.identity import config_identity, identity_hash
from bookkeeping.io import atomic_write_json, atomic_write_text, differing_keys, ensure_writable_dir, read_json


def section_hash(cfg: DictConfig | dict, sections: tuple[str, ...]) -> str:
    """The hash `run` records for a stage: the identity of the config sections its outputs depend on."""
    return identity_hash(config_identity(cfg, sections))


def comparable_config(cfg: DictConfig) -> dict:
    """The identity of the whole config but the evaluation's sample size (more seeds or pairs extend it) and
    `pixel`: world_model=pixel adds a second world model to a run directory (its own stages keep their
    identities, the latent ones are not touched)."""
    from agent.evaluate import SAMPLE_SIZE

    return config_identity(cfg, [key for key in cfg if key != "pixel"],
                           ignoring=[f"evaluate.{key}" for key in SAMPLE_SIZE])


def check_run_dir(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse a run directory made by a different config unless run.overwrite=true."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    try:
        saved = OmegaConf.load(saved_path)
    except Exception:  # edited by hand into something that is not YAML
        saved = None
    if not isinstance(saved, DictConfig):
        if cfg.run.overwrite:
            return
        raise ValueError(f"{str(saved_path)!r} is not a readable config; restore it, or pass run.overwrite=true "
                         "to replace it")
    differing = differing_keys(comparable_config(saved), comparable_config(cfg))
    if differing and not cfg.run.overwrite:
        shown = ", ".join(differing[:8]) + (f" and {len(differing) - 8} more" if len(differing) > 8 else "")
        raise ValueError(f"run directory {str(run_dir)!r} was made by a different config ({shown}); "
                         "pass run.overwrite=true to rerun the affected stages, or use another hydra.run.dir")


def call(target: str, cfg: DictConfig, *args):
    import importlib

    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)(cfg, *args)


class StageBook:
    """`DIR/stages.json`: per stage, the config hash it ran with, whether it finished, its wall time."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "stages.json"
        self.entries: dict = read_json(self.path) if self.path.exists() else {}

    def is_done(self, stage: str, config_hash: str, output_dir: Path, sections: tuple[str, ...],
                last_output: str) -> bool:
        """Finished with this hash, and its outputs are still there (`last_output`) and still the ones
        that stage made: `config.yaml` beside them (written by every stage once its checks pass; by
        embed once complete) hashes the same."""
        entry = self.entries.get(stage, {})
        if not (entry.get("done", False) and entry.get("hash") == config_hash):
            return False
        written = output_dir / "config.yaml"
        if not (written.is_file() and (output_dir / last_output).is_file()):
            return False
        try:
            written_config = OmegaConf.to_container(OmegaConf.load(written))
        except Exception:  # unreadable (edited by hand): not the config this stage wrote, so remake
            return False
        return isinstance(written_config, dict) and section_hash(written_config, sections) == config_hash

    def record(self, stage: str, config_hash: str, done: bool, wall_time_s: float | None = None) -> None:
        self.entries[stage] = {"hash": config_hash, "done": done, "wall_time_s": wall_time_s}
        atomic_write_json(self.path, self.entries)


def run_stage(book: StageBook, name: str, sections: tuple[str, ...], output_dir: Path, last_output: str,
              target: str, cfg: DictConfig, *args):
    config_hash = section_hash(cfg, sections)
    if book.is_done(name, config_hash, output_dir, sections, last_output):
        print(f"[run] {name}: up to date, skipped")
        return None
    print(f"[run] {name} ...")
    book.record(name, config_hash, done=False)
    started = time.perf_counter()
    result = call(target, cfg, *args)
    book.record(name, config_hash, done=True, wall_time_s=time.perf_counter() - started)
    return result


def main(cfg: DictConfig) -> None:
    unknown = [agent for agent in cfg.run.agents if agent not in AGENTS]
    if unknown or not cfg.run.agents:
        raise ValueError(f"run.agents={list(cfg.run.agents)} is invalid; expected some of {list(AGENTS)}")
    if cfg.encoder.get("pretrain") is None:  # released weights: found now, not after collecting for minutes
        from world_model.vjepa.weights import read_config, resolve_source

        read_config(resolve_source(str(cfg.encoder.source)))
    if "pixel" in cfg.run.agents:  # a bad pixel setting fails now, not after collecting and training
        if cfg.get("pixel") is None:
            raise ValueError("run.agents names the pixel agent, which needs world_model=pixel")
        from world_model.train_pixel import check_settings

        check_settings(cfg)
    run_dir = ensure_writable_dir(cfg.run_dir, "run directory")
    check_run_dir(cfg, run_dir)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    command = command_line()
    if command:  # the accepted command, preset and overrides, to make this run again
        atomic_write_text(run_dir / "command.txt", command + "\n")
    book = StageBook(run_dir)
    if book.entries.get("collect", {}).get("done") and not dataset_is_intact(cfg):
        print("[run] collect: a dataset split lost its manifest or a shard fails its checksum; collecting again")
        book.entries.pop("collect", None)
    damaged = damaged_latent_splits(Path(cfg.paths.latents)) if book.entries.get("embed", {}).get("done") else []
    for split_dir, problem in damaged:
        print(f"[run] embed: {split_dir.name} {problem}; embedding it again")
        shutil.rmtree(split_dir)
        book.entries.pop("embed", None)
    for name, stage in STAGES.items():
        if not stage.target or not set(stage.needed_by) & set(cfg.run.agents):
            continue  # not a stage of `run`, or one no agent of this run needs (a world model none plans with)
        if name == "pretrain" and cfg.encoder.get("pretrain") is None:
            continue  # official weights: nothing to pretrain
        if name == "evaluate":
            for agent in cfg.run.agents:
                if book.entries.get(f"evaluate_{agent}", {}).get("done") and not evaluation_resumes(cfg, agent):
                    book.entries.pop(f"evaluate_{agent}")  # made with other settings, run.overwrite=true: afresh
                run_stage(book, f"evaluate_{agent}", evaluation_sections(agent), Path(cfg.paths.evaluation) / agent,
                          stage.last_output, stage.target, cfg, agent)
            continue
        run_stage(book, name, stage.sections, Path(cfg.paths[stage.output_key]), stage.last_output, stage.target,
                  cfg)
    summary = summarize(cfg, run_dir, book)
    summary["report"] = str(write_report(cfg.paths.evaluation))  # eval/report.html: every agent's page
    atomic_write_json(run_dir / "summary.json", summary)
    print_summary(summary)


def dataset_is_intact(cfg: DictConfig) -> bool:
    """Every split the config asks for has its manifest, and every committed shard still matches its
    checksum (about 3 s for the reacher preset's 1.3 GB). What fails is made again by `collect`,
    identical to the original."""
    from envs.collect import split_sizes
    from envs.dataset import MANIFEST, EpisodeStore

    dataset_dir = Path(cfg.paths.dataset)
    splits = [dataset_dir / split for split, count in split_sizes(cfg.collect).items() if count > 0]
    if not all((split / MANIFEST).is_file() for split in splits):
        return False
    return not any(EpisodeStore(split).verify() for split in splits)


def damaged_latent_splits(latents_dir: Path) -> list[tuple[Path, str]]:
    """(split folder, what is wrong) for every complete cache split that fails its checksums or holds
    non-finite values: changed values passed as "embed: up to date" and silently changed the results."""
    from world_model.latent_cache import MANIFEST, LatentCache

    if not latents_dir.is_dir():
        return []
    splits = sorted(path for path in latents_dir.iterdir() if (path / MANIFEST).is_file())
    problems = [(split, LatentCache(split).verify()) for split in splits]
    return [(split, problem) for split, problem in problems if problem]


def summarize(cfg: DictConfig, run_dir: Path, book: StageBook) -> dict:
    agents = {}  # this run's agents, then any other evaluated in the same eval/ (the latent beside the pixel one)
    for agent in [*cfg.run.agents, *(agent for agent in AGENTS if agent not in cfg.run.agents)]:
        metrics_path = Path(cfg.paths.evaluation) / agent / "metrics.json"
        if metrics_path.exists():
            agents[agent] = agent_summary(read_json(metrics_path), metrics_path.parent)
    stage_times = {name: entry.get("wall_time_s") for name, entry in book.entries.items()}
    return {"task": cfg.env.name, "run_dir": str(run_dir), "agents": agents, "stage_wall_time_s": stage_times,
            "total_wall_time_s": sum(t for t in stage_times.values() if t)}


def print_summary(summary: dict) -> None:
    print(f"\n== {summary['task']}: {summary['run_dir']}")
    for agent, metrics in summary["agents"].items():
        low, high = metrics["success_rate_ci95"]
        latency = metrics["planning_latency"].get("mean_s")
        latency_text = f"{latency:.2f} s/plan" if latency else "no planning"
        wrapped = metrics.get("success_rate_wrapped")
        wrapped_text = "" if wrapped is None else f"  wrapped-angle success {wrapped:.1%}"
        print(f"  {agent:<7} success {metrics['success_rate']:6.1%}  (95% CI {low:.1%}-{high:.1%}, "
              f"{metrics['episodes']} episodes)  held {metrics['success_rate_held']:.1%}  {latency_text}{wrapped_text}")
    for name, seconds in summary["stage_wall_time_s"].items():
        print(f"  stage {name:<18} {seconds if seconds is None else round(seconds, 1)} s")
    print(f"  total {summary['total_wall_time_s']:.0f} s")
    for agent, metrics in summary["agents"].items():
        if metrics["videos"]:
            print(f"  videos ({agent}): {Path(metrics['videos'][0]).parent}")
    if summary.get("report"):
        print(f"  report: {summary['report']}  (open it in a browser)")
