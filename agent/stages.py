"""The stages, in one table: what each `jepa-agent` subcommand runs (agent/cli.py) and what `jepa-agent run`
chains, in this order, for the agents that need them (agent/pipeline.py).

A stage of `run` records in `DIR/stages.json`, under its name, a hash of its `sections`; the evaluation is
recorded once per agent (`evaluate_<agent>`, into `paths.evaluation/<agent>`). Imports nothing heavy: the
command line reads it before it parses the arguments.
"""
from __future__ import annotations

from typing import NamedTuple

AGENTS = ("latent", "random", "oracle", "pixel", "expert", "amortized", "amortized_cem")
LATENT_AGENTS = ("latent", "amortized", "amortized_cem")  # those that read the run's encoder and predictor
AMORTIZED_AGENTS = ("amortized", "amortized_cem")  # those that read the run's goal policy
DATA = ("seed", "env", "collect")  # the sections every stage's outputs depend on: the dataset's
LATENT = (*DATA, "encoder", "embed", "predictor")  # ... and the latent world model's


class Stage(NamedTuple):
    summary: str                      # what it does, as `jepa-agent --help` lists it
    command: str | None               # "module:function" its subcommand calls with the config; None: no subcommand
    subcommand: str | None = None     # the subcommand's name where it is not the stage's
    target: str | None = None         # "module:function" `run` calls with the config; None: not a stage of `run`
    sections: tuple[str, ...] = ()    # the config sections its outputs depend on (the hash in stages.json)
    output_key: str = ""              # the `paths` key of its outputs
    last_output: str = ""             # a file among them that only a finished stage has written
    needed_by: tuple[str, ...] = ()   # the agents (`run.agents`) that need it: `run` skips it for the others


STAGES: dict[str, Stage] = {
    "tasks": Stage("list the registered tasks", "envs.registry:print_tasks"),
    "collect": Stage("collect offline episodes into DIR/dataset (resumable)", "envs.collect:main",
                     target="envs.collect:main", sections=DATA, output_key="dataset",
                     last_output="eval/manifest.json", needed_by=AGENTS),
    "pretrain": Stage("pretrain the V-JEPA encoder on DIR/dataset -> DIR/encoder", "world_model.vjepa.pretrain:main",
                      target="world_model.vjepa.pretrain:main", sections=(*DATA, "encoder"), output_key="encoder",
                      last_output="model.safetensors", needed_by=LATENT_AGENTS),
    "probe": Stage("linear/attentive probes of the frozen encoder vs random ones", "world_model.probe:main"),
    "embed": Stage("embed every frame once with the frozen encoder -> DIR/latents", "world_model.latent_cache:main",
                   target="world_model.latent_cache:main", sections=(*DATA, "encoder", "embed"),
                   output_key="latents", last_output="train/manifest.json", needed_by=LATENT_AGENTS),
    "train": Stage("train the action-conditioned predictor -> DIR/predictor", "world_model.train_predictor:main",
                   target="world_model.train_predictor:main", sections=LATENT, output_key="predictor",
                   last_output="predictor.safetensors", needed_by=LATENT_AGENTS),
    "train_pixel": Stage("train the pixel world model (world_model=pixel) -> DIR/pixel_model", None,
                         target="world_model.train_pixel:main", sections=(*DATA, "pixel"),
                         output_key="pixel_model", last_output="pixel_model.safetensors", needed_by=("pixel",)),
    "imagine_pixel": Stage("the pixel world model: imagined vs real frames, rollout error", "agent.imagination:main",
                           subcommand="imagine", target="agent.imagination:main", sections=(*DATA, "pixel"),
                           output_key="pixel_model", last_output="imagination/rollout_error.json",
                           needed_by=("pixel",)),
    # the amortized agents' goal policy (its chunk defaults to planner.horizon blocks)
    "policy": Stage("train the goal-conditioned policy of the amortized agents -> DIR/policy",
                    "world_model.policy_training:main", target="world_model.policy_training:main",
                    sections=(*LATENT, "planner", "policy"), output_key="policy",
                    last_output="goal_policy.safetensors", needed_by=AMORTIZED_AGENTS),
    "diagnose": Stage("rollout error, action retrieval, energy landscape", "world_model.diagnostics:main"),
    # `run` evaluates each agent on its own (`main(cfg, agent)`; the pixel agent's also depends on `pixel`)
    "evaluate": Stage("goal-reaching evaluation: metrics, episodes, videos, report.html", "agent.evaluate:command",
                      target="agent.evaluate:main", sections=(*LATENT, "planner", "mpc", "evaluate"),
                      output_key="evaluation", last_output="metrics.json", needed_by=AGENTS),
    "run": Stage("the whole pipeline, collect -> evaluate, resumable (experiment=NAME)", "agent.pipeline:main"),
}


def evaluation_sections(agent: str) -> tuple[str, ...]:
    """The sections `run`'s evaluation of `agent` depends on: the evaluate stage's, plus the world model or
    goal policy that agent alone reads (a changed `policy` setting evaluates the amortized agents again)."""
    own = {"pixel": ("pixel",), "amortized": ("policy",), "amortized_cem": ("policy",)}.get(agent, ())
    return STAGES["evaluate"].sections + own


SUBCOMMANDS: dict[str, Stage] = {stage.subcommand or name: stage for name, stage in STAGES.items() if stage.command}
