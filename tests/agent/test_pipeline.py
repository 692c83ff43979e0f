"""`jepa-agent run` end to end with the micro preset: outputs, skip on rerun, kill and resume."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import pytest
from omegaconf import OmegaConf

from envs.registry import task_class
from tests.conftest import REPO, cli_in_process

STAGES = ["collect", "pretrain", "embed", "train", "evaluate_latent", "evaluate_random", "evaluate_oracle"]


def test_run_writes_every_stage_and_a_summary(micro_run_dir):
    command = (micro_run_dir / "command.txt").read_text().strip()  # the accepted command, to make the run again
    assert command == f"jepa-agent run experiment=micro hydra.run.dir={micro_run_dir}"
    assert not (micro_run_dir / ".hydra").exists() and not list(micro_run_dir.glob("*.log"))
    book = json.loads((micro_run_dir / "stages.json").read_text())
    assert list(book) == STAGES and all(entry["done"] for entry in book.values())
    summary = json.loads((micro_run_dir / "summary.json").read_text())
    assert set(summary["agents"]) == {"latent", "random", "oracle"}
    for agent in ("latent", "random", "oracle"):
        metrics = json.loads((micro_run_dir / "eval" / agent / "metrics.json").read_text())
        assert metrics["agent"] == agent and metrics["episodes"] == 2
        low, high = metrics["success_rate_ci95"]
        assert low <= metrics["success_rate"] <= high
        assert metrics["config"]["evaluate"]["budget"] == 10
        episodes_file = micro_run_dir / "eval" / agent / "episodes.jsonl"
        records = [json.loads(line) for line in episodes_file.read_text().splitlines()]
        assert len(records) == 2 and {"success", "steps_to_success", "min_distance"} <= set(records[0])
        assert metrics["success_rate"] == sum(record["success"] for record in records) / 2
        threshold = task_class(metrics["task"]).success_threshold
        assert metrics["episodes_starting_at_goal"] == sum(record["initial_distance"] < threshold for record in records)
        assert metrics["success_rate_held"] == sum(record["held"] for record in records) / 2
        away = [record["success"] for record in records if record["initial_distance"] >= threshold]
        assert metrics["success_rate_starting_away"] == (sum(away) / len(away) if away else None)
    latent = json.loads((micro_run_dir / "eval" / "latent" / "metrics.json").read_text())
    assert latent["planning_latency"]["count"] >= 2 and latent["planning_latency"]["p95_s"] > 0
    video = next((micro_run_dir / "eval" / "latent" / "videos").glob("*.mp4"))
    frames = iio.imread(video)
    assert frames.shape[0] == 11 and frames.shape[-1] == 3  # budget 10 steps + the start frame
    assert (micro_run_dir / "config.yaml").exists() and (micro_run_dir / "dataset" / "preview.mp4").exists()


def test_rerun_skips_finished_stages(micro_run_dir):
    result = cli_in_process("run", "experiment=micro", f"hydra.run.dir={micro_run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("up to date, skipped") == len(STAGES)


def test_a_moved_run_directory_is_still_up_to_date(micro_run_dir, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(micro_run_dir, moved)
    result = cli_in_process("run", "experiment=micro", f"hydra.run.dir={moved}", "threads=1")  # threads: how, not what
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("up to date, skipped") == len(STAGES)


def test_outputs_deleted_or_remade_by_a_lone_stage_are_made_again(micro_run_dir, tmp_path):
    """`run` trusts stages.json only while each stage's outputs are there and its config.yaml still
    matches: a damaged dataset shard, a deleted encoder file or evaluation is made again, an evaluation a lone
    `evaluate` grew is summarised again at the run's size, and more eval seeds through `run` itself grow every
    evaluation without run.overwrite."""
    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir, run_dir)
    shutil.rmtree(run_dir / "eval" / "oracle")
    grown = cli_in_process("evaluate", "experiment=micro", "evaluate.pairs=3", f"hydra.run.dir={run_dir}")
    assert grown.returncode == 0, grown.stderr[-2000:]
    report = run_dir / "eval" / "report.html"  # the evaluation's page, remade and linked by `evaluate` too
    assert json.loads((run_dir / "summary.json").read_text())["report"] == str(report) and report.is_file()
    (run_dir / "encoder" / "model.safetensors").unlink()  # pretrain exports it again from its last checkpoint
    shard = next((run_dir / "dataset" / "train").glob("*/frames.npy"))
    original = shard.read_bytes()
    shard.write_bytes(original[: len(original) // 2])  # a damaged shard: collect makes its episodes again
    result = cli_in_process("run", "experiment=micro", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    for remade in ("collect", "pretrain", "evaluate_latent", "evaluate_oracle"):
        assert f"[run] {remade} ..." in result.stdout
    assert result.stdout.count("up to date, skipped") == len(STAGES) - 4
    assert shard.read_bytes() == original
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {agent: metrics["episodes"] for agent, metrics in summary["agents"].items()} == {
        "latent": 2, "random": 2, "oracle": 2}
    more_seeds = cli_in_process("run", "experiment=micro", "evaluate.seeds=[0,1]", f"hydra.run.dir={run_dir}")
    assert more_seeds.returncode == 0, more_seeds.stderr[-2000:]
    assert more_seeds.stdout.count("up to date, skipped") == len(STAGES) - 3  # collect to train
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {metrics["episodes"] for metrics in summary["agents"].values()} == {4}


@pytest.mark.parametrize("preset", ["micro", "quick", "reacher", "reacher_lean", "point_mass", "cube"])
def test_released_weights_on_the_command_line_replace_a_presets_encoder(tmp_path, preset):
    """Presets pick their in-domain encoder as a group option, so `encoder=vjepa2_vitl` replaces it
    whole: no stray pretraining settings or architecture, and `run` skips pretraining."""
    from agent.config import compose_config

    cfg = compose_config(tmp_path, [f"experiment={preset}", "encoder=vjepa2_vitl"])
    assert cfg.encoder.pretrain is None and cfg.encoder.architecture is None
    assert compose_config(tmp_path, [f"experiment={preset}"]).encoder.pretrain.steps >= 1


def test_run_with_released_format_weights_from_a_directory(micro_run_dir, tmp_path):
    """The official-weights path end to end, on a tiny random VJEPA2 model saved as transformers saves
    the released ones: no pretrain stage, the rest of the pipeline on its tokens."""
    import torch
    from transformers import VJEPA2Config, VJEPA2Model

    torch.manual_seed(0)
    weights = tmp_path / "weights"
    VJEPA2Model(VJEPA2Config(crop_size=16, patch_size=4, tubelet_size=2, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, pred_hidden_size=16, pred_num_hidden_layers=1,
                             pred_num_attention_heads=2, frames_per_clip=4)).save_pretrained(weights)
    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir / "dataset", run_dir / "dataset")
    result = cli_in_process("run", "experiment=micro", "encoder=vjepa2_vitl", f"encoder.source={weights}",
                            "run.agents=[latent]", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[run] pretrain" not in result.stdout and not (run_dir / "encoder").exists()
    assert list(json.loads((run_dir / "stages.json").read_text())) == ["collect", "embed", "train", "evaluate_latent"]
    assert json.loads((run_dir / "eval" / "latent" / "metrics.json").read_text())["episodes"] == 2
    missing = cli_in_process("run", "experiment=micro", "encoder=vjepa2_vitl", f"encoder.source={tmp_path}/none",
                             f"hydra.run.dir={tmp_path}/missing")
    assert missing.returncode == 2 and "does not exist" in missing.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "missing" / "dataset").exists()  # found out before collecting anything


def test_bad_top_level_values_are_one_line_errors(tmp_path):
    for override, expected in (("run.overwrite=no", "run.overwrite='no' is invalid; expected true or false"),
                               ("threads=abc", "threads='abc' is invalid; expected a positive int"),
                               ("device=tpu", "device='tpu' is invalid; expected auto, cpu, cuda")):
        result = cli_in_process("collect", "experiment=micro", override, f"hydra.run.dir={tmp_path}")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {expected}"), result.stderr
    assert not (tmp_path / "dataset").exists()


def test_a_different_config_is_refused_naming_the_keys(micro_run_dir):
    result = cli_in_process("run", "experiment=micro", "collect.episodes=13", "planner.samples=8",
                            f"hydra.run.dir={micro_run_dir}")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "collect.episodes" in last and "planner.samples" in last and "run.overwrite=true" in last


def test_unknown_preset_lists_the_presets(tmp_path):
    result = cli_in_process("run", "experiment=nope", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: experiment=nope is invalid; "
                                     "expected one of: cube, micro, point_mass, quick, reacher, reacher_lean")


def test_a_config_yaml_edited_into_garbage_is_refused_or_remade(tmp_path):
    """The run's config.yaml: refused by name (overwrite replaces it). A stage's: the stage is remade."""
    from agent.config import compose_config
    from agent.pipeline import StageBook, check_run_dir, section_hash
    from agent.stages import STAGES as PIPELINE_STAGES

    cfg = compose_config(tmp_path, ["experiment=micro"])
    (tmp_path / "config.yaml").write_text("seed: [\n")
    with pytest.raises(ValueError, match="config.yaml' is not a readable config; restore it, or pass run.overwrite"):
        check_run_dir(cfg, tmp_path)
    cfg.run.overwrite = True
    check_run_dir(cfg, tmp_path)
    sections, last_output = PIPELINE_STAGES["collect"].sections, PIPELINE_STAGES["collect"].last_output
    book, output_dir, config_hash = StageBook(tmp_path), tmp_path / "dataset", section_hash(cfg, sections)
    (output_dir / "eval").mkdir(parents=True)
    (output_dir / last_output).write_text("{}")
    book.record("collect", config_hash, done=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    assert book.is_done("collect", config_hash, output_dir, sections, last_output)
    (output_dir / "config.yaml").write_text("seed: [\n")
    assert not book.is_done("collect", config_hash, output_dir, sections, last_output)


def test_kill_during_pretraining_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    settings = ["experiment=micro", "encoder.pretrain.steps=40", "run.agents=[latent]", f"hydra.run.dir={run_dir}"]
    args = [sys.executable, "-m", "agent.cli", "run", *settings]
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint_dir = run_dir / "encoder" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not (checkpoint_dir / "last.pt").exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    book = json.loads((run_dir / "stages.json").read_text())
    assert book["collect"]["done"] and not book["pretrain"]["done"], "the kill should land in pretraining"

    result = cli_in_process("run", *settings)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[run] collect: up to date, skipped" in result.stdout
    assert "resum" in (result.stdout + result.stderr).lower()  # pretraining continued from its checkpoint
    book = json.loads((run_dir / "stages.json").read_text())
    assert all(entry["done"] for entry in book.values())


@pytest.mark.parametrize("run_dir, message", [
    ("", "hydra.run.dir= is empty; expected the run directory"),
    ("FILE", "is a file; expected a directory"),
    ("FILE/run", "which is a file; expected a directory"),
    ("/proc/sys/run", "cannot be written: '/proc/sys' is read-only"),
])
def test_a_run_directory_that_cannot_be_one_is_refused_in_one_line(tmp_path, run_dir, message):
    """Hydra makes the run directory before any check runs: an empty value wrote into the current
    directory, a file or a read-only place gave a traceback."""
    (tmp_path / "FILE").write_text("not a directory")
    run_dir = run_dir.replace("FILE", str(tmp_path / "FILE"))
    result = subprocess.run([sys.executable, "-m", "agent.cli", "collect", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and sorted(path.name for path in tmp_path.iterdir()) == ["FILE"]


def test_a_second_command_on_a_run_directory_in_use_is_refused(tmp_path):
    """Two commands on one run directory both ran every stage; now the second is refused at once, naming
    the holder, and the lock dies with its process (a kill leaves none behind)."""
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "agent.cli", "collect", "experiment=micro", "collect.episodes=5000",
                              f"hydra.run.dir={run_dir}"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (run_dir / ".lock").exists() and time.time() < deadline:
            time.sleep(0.1)
        second = cli_in_process("run", "experiment=micro", f"hydra.run.dir={run_dir}")
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"run directory '{run_dir}' is in use by pid {first.pid} (jepa-agent collect" in second.stderr
    finally:
        first.kill()
        first.wait()
    # the lock died with its holder
    after = cli_in_process("collect", "experiment=micro", "run.overwrite=true", f"hydra.run.dir={run_dir}")
    assert after.returncode == 0, after.stderr[-2000:]
    assert not (run_dir / ".lock").exists()


def test_a_refused_command_leaves_no_directory_behind(tmp_path):
    """Hydra makes the run directory before the stage checks its settings: a refusal removes what it made
    (and nothing that was there before)."""
    (tmp_path / "runs").mkdir()
    result = cli_in_process("collect", "collect.episodes=0", f"hydra.run.dir={tmp_path / 'runs' / 'new' / 'run'}")
    assert result.returncode == 2 and "collect.episodes=0 is invalid" in result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["runs"] and not any((tmp_path / "runs").iterdir())
