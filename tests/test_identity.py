"""One identity mechanism (bookkeeping/identity.py): the sections a stage reads, less what never counts, plus inputs."""
from __future__ import annotations

from omegaconf import OmegaConf

from bookkeeping.identity import NEVER_COUNT, config_identity, identity_hash

CONFIG = {"seed": 3, "run_dir": "/runs/a", "device": "cuda", "paths": {"encoder": "/runs/a/encoder"},
          "predictor": {"block": 5, "train": {"lr": 1e-3, "checkpoint_every": 50, "resume": True}},
          "evaluate": {"budget": 50, "seeds": [0], "videos": 4, "agent": "latent"},
          "encoder": {"source": "/runs/a/encoder"}}


def test_the_sections_nest_as_in_the_config_and_an_absent_one_is_none():
    built = config_identity(CONFIG, ("seed", "predictor.block", "policy"))
    assert built == {"seed": 3, "predictor": {"block": 5}, "policy": None}


def test_where_and_how_a_run_goes_never_counts_at_any_depth():
    built = config_identity(CONFIG, ("device", "paths", "predictor.train", "evaluate"))
    assert built == {"predictor": {"train": {"lr": 1e-3}}, "evaluate": {"budget": 50, "seeds": [0]}}
    assert {"run_dir", "paths", "device", "threads", "checkpoint_every"} <= NEVER_COUNT


def test_ignored_paths_are_left_out_and_inputs_added_json_normalised():
    built = config_identity(CONFIG, ("evaluate",), ignoring=("evaluate.seeds",), files=("a", "b"), agent="oracle")
    assert built == {"evaluate": {"budget": 50}, "files": ["a", "b"], "agent": "oracle"}  # inputs are not filtered


def test_paths_inside_the_run_directory_compare_equal_wherever_it_lives():
    moved = {**CONFIG, "run_dir": "/elsewhere/a", "encoder": {"source": "/elsewhere/a/encoder"}}
    assert config_identity(CONFIG, ("encoder",)) == config_identity(moved, ("encoder",)) == \
        {"encoder": {"source": "${run_dir}/encoder"}}


def test_a_dictconfig_gives_the_identity_of_its_resolved_dict():
    cfg = OmegaConf.create({**CONFIG, "predictor": {"block": 5, "train": {"lr": 1e-3, "steps": "${seed}"}}})
    assert config_identity(cfg, ("predictor",))["predictor"]["train"]["steps"] == 3
    assert config_identity(cfg, ("predictor",)) == config_identity(OmegaConf.to_container(cfg, resolve=True),
                                                                   ("predictor",))


def test_the_hash_follows_what_counts_only():
    counted = identity_hash(config_identity(CONFIG, ("predictor",)))
    other_checkpoints = {**CONFIG, "predictor": {"block": 5, "train": {"lr": 1e-3, "checkpoint_every": 7}}}
    other_lr = {**CONFIG, "predictor": {"block": 5, "train": {"lr": 1e-2}}}
    assert identity_hash(config_identity(other_checkpoints, ("predictor",))) == counted
    assert identity_hash(config_identity(other_lr, ("predictor",))) != counted and len(counted) == 16
