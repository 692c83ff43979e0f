"""The benchmark scripts run in smoke mode and write their JSON."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, cli_in_process, module_in_process

RESULTS = REPO / "benchmarks" / "results"


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("module, output", [
    ("benchmarks.collect_speed", "collect_speed_smoke.json"),
    ("benchmarks.planning_speed", "planning_speed_smoke.json"),
    ("benchmarks.planner_synthetic", "planner_synthetic_smoke.json"),
    ("benchmarks.pixel_vs_latent_speed", "pixel_vs_latent_speed_smoke.json"),
])
def test_speed_benchmark_smoke(module, output):
    predictors = ("--predictors", "lean", "default") if module == "benchmarks.planning_speed" else ()
    result = run_module(module, "--smoke", *predictors)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((RESULTS / output).read_text())
    assert data
    if module == "benchmarks.planning_speed":  # bf16 timed only where it is native (AVX2 emulates it 4-8x slower)
        from world_model.device import native_bf16
        assert {row["bf16"] for row in data["rows"]} == {False, native_bf16("cpu")}
        assert set(data["matmul_peak_flops"]) == {"fp32", "bf16"} if native_bf16("cpu") else {"fp32"}
        assert {row["predictor"] for row in data["rows"]} == {"lean", "default", "simulator"}
        cem_alone = {row["predictor"]: row["seconds_per_plan"] for row in data["rows"] if row["planner"] == "cem"
                     and row["batch_envs"] == 1 and not row["bf16"] and not row["compiled"]}
        for row in data["rows"]:  # the baseline is the first predictor named: lean
            assert row["vs_cem_fp32"] == pytest.approx(row["seconds_per_env"] / cem_alone["lean"])
            if row["predictor"] != "simulator":
                assert row["vs_batch_one"] == pytest.approx(row["seconds_per_env"] / [
                    other["seconds_per_plan"] for other in data["rows"] if other["batch_envs"] == 1
                    and (other["predictor"], other["planner"], other["bf16"], other["compiled"])
                    == (row["predictor"], row["planner"], row["bf16"], row["compiled"])][0])


def test_run_benchmarks_on_a_finished_run(micro_run_dir):
    result = module_in_process("benchmarks.stage_times", str(micro_run_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pretrain" in result.stdout and "total" in result.stdout
    output = RESULTS / "sweep_summary_smoke.json"
    result = module_in_process("benchmarks.sweep_summary", str(micro_run_dir), str(micro_run_dir),
                               "--output", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = json.loads(output.read_text())
    latent = json.loads((micro_run_dir / "summary.json").read_text())["agents"]["latent"]
    assert sweep["agents"]["latent"]["runs"] == 2 and sweep["agents"]["latent"]["episodes"] == 2 * latent["episodes"]
    assert sweep["agents"]["latent"]["mean"] == pytest.approx(latent["success_rate"])
    assert sweep["agents"]["latent"]["pooled"] == pytest.approx(latent["success_rate"])
    assert sweep["runs"][0]["seed"] == 0 and sweep["runs"][0]["command"].startswith("jepa-agent run experiment=micro")
    result = module_in_process("benchmarks.success_vs_budget", str(micro_run_dir), "--smoke")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((RESULTS / "success_vs_budget_smoke.json").read_text())
    assert {row["agent"] for row in data["rows"]} == {"latent", "oracle"}
    assert (RESULTS / "success_vs_budget_smoke.png").stat().st_size > 1000
    shown = micro_run_dir / "eval" / "plots" / "success_vs_budget_smoke.png"  # in the run's report too
    assert shown.read_bytes() == (RESULTS / shown.name).read_bytes()
    assert 'src="plots/success_vs_budget_smoke.png"' in (micro_run_dir / "eval" / "report.html").read_text()
    output = RESULTS / "encoder_ceiling_smoke.json"
    result = module_in_process("benchmarks.encoder_ceiling", str(micro_run_dir), "--pairs", "2", "--samples", "8",
                               "--iterations", "2", "--output", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(output.read_text())
    assert data["encoder"]["success_rate"] in (0.0, 0.5, 1.0) and "random_encoder" in data  # 2 pairs
    output = RESULTS / "predictor_inputs_smoke.json"
    result = module_in_process("benchmarks.predictor_inputs", str(micro_run_dir), "--steps", "20", "--width", "32",
                               "--output", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(output.read_text())["rows"]
    assert [row["kind"] for row in rows] == ["latents", "latents+proprio", "latents+fourier", "fourier"]
    assert all(row["mse"] > 0 and row["copy_last_mse"] > 0 for row in rows)


@pytest.mark.parametrize("preset", ["quick", "reacher_lean"])
def test_the_latent_energy_alone_has_no_position_term_and_no_joint_hold(tmp_path, preset):
    """(a) of the pixels-or-latents table plans on the latent distance alone, on presets whose agents hold too."""
    from agent.config import compose_config
    from benchmarks.pixels_or_latents import LATENT_ONLY

    cfg = compose_config(tmp_path, [f"experiment={preset}", *LATENT_ONLY])
    assert cfg.evaluate.energy.position_weight == 0 and list(cfg.evaluate.joint_hold.agents) == []
    assert "latent" in compose_config(tmp_path, [f"experiment={preset}"]).evaluate.joint_hold.agents


def test_pixels_or_latents_table_on_a_micro_run(micro_run_dir, tmp_path):
    """One command: the latent run resumes, the latent-only energy is evaluated beside it, the predictor diagnosed,
    the pixel model trained and evaluated in the same directory, and the table lists all five agents."""
    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir, run_dir)
    result = module_in_process("benchmarks.pixels_or_latents", "experiment=micro", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {row["agent"] + ("_only" if "alone" in row["label"] else ""): row
            for row in json.loads((run_dir / "pixels_or_latents.json").read_text())["rows"]}
    assert set(rows) == {"latent_only", "latent", "pixel", "random", "oracle"}
    assert rows["latent"]["success_rate"] == json.loads((micro_run_dir / "eval" / "latent" / "metrics.json")
                                                        .read_text())["success_rate"]  # resumed, not run again
    energy = json.loads((run_dir / "eval_latent_energy" / "latent" / "metrics.json").read_text())["energy"]
    assert energy["position_weight"] == energy["latent_readout_weight"] == energy["hold_radius"] == 0
    assert all(row["episodes"] == 2 for row in rows.values())
    assert rows["latent"]["rollout_error_vs_copy_last"] and rows["pixel"]["rollout_error_vs_copy_last"]
    assert rows["pixel"]["training_s"] > 0 and rows["latent"]["training_s"] > 0 and rows["random"]["training_s"] is None
    table = (run_dir / "pixels_or_latents.md").read_text()
    assert table.count("\n| ") == 6 and "(c) pixel, frame distance" in table  # a header and five agents


def test_success_vs_speed_on_a_micro_run_with_a_goal_policy(micro_run_dir, tmp_path):
    """Every agent's point from real evaluations: the run's own agents resume (and extend to the seeds asked), the
    others are evaluated into eval_speed/, each timed; the JSON and the PNG go where --output says."""
    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir, run_dir)
    result = cli_in_process("policy", "experiment=micro", "policy.steps=10", "policy.batch_size=16",
                            f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    output = tmp_path / "speed" / "reacher.json"
    result = module_in_process("benchmarks.success_vs_speed", str(run_dir), "--seeds", "0", "1", "--repeats", "1",
                               "--threads", "1", "--output", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(output.read_text())
    rows = {row["label"]: row for row in data["rows"]}
    assert list(rows) == ["cem", "mppi", "amortized", "oracle", "random", "amortized_cem_1it", "cem_1it"]
    assert data["seeds"] == [0, 1] and all(row["episodes"] == 4 for row in rows.values())  # 2 pairs x 2 seeds
    assert rows["mppi"]["planner"]["name"] == "mppi" and rows["cem_1it"]["planner"]["iterations"] == 1
    assert all(row["seconds_per_action"] > 0 for label, row in rows.items() if label != "random")
    assert rows["cem"]["evaluation"] == str(run_dir / "eval" / "latent")  # the run's own, extended to seed 1
    assert json.loads((run_dir / "eval" / "latent" / "metrics.json").read_text())["seeds"] == [0, 1]
    assert (run_dir / "eval_speed" / "amortized_cem_1it" / "amortized_cem" / "metrics.json").is_file()
    assert output.with_suffix(".png").stat().st_size > 1000
    assert rows["amortized"]["timed_calls"] == 100 and rows["cem"]["timed_calls"] == 1  # the policy's: 100 at least
    assert data["goal_policy"]["settings"]["steps"] == 10 and len(data["goal_policy"]["sha256"]) == 64
    assert data["goal_policy"]["goal_positions"] == "readout"
    identity_path = run_dir / "eval" / "amortized" / "identity.json"  # made by another policy: refused before CEM's
    identity_path.write_text(json.dumps({**json.loads(identity_path.read_text()), "policy_sha256": "0" * 64}))
    cem_metrics = (run_dir / "eval" / "latent" / "metrics.json").stat().st_mtime_ns
    result = module_in_process("benchmarks.success_vs_speed", str(run_dir), "--seeds", "0", "1",
                               "--output", str(output))
    assert result.returncode == 2 and "policy_sha256" in result.stderr and "Traceback" not in result.stderr
    assert (run_dir / "eval" / "latent" / "metrics.json").stat().st_mtime_ns == cem_metrics
    from omegaconf import OmegaConf

    from benchmarks.success_vs_speed import evaluation_config

    # fewer pairs or seeds than the run's own would shrink its metrics.json: they go to eval_speed/ instead
    for pairs, seeds in ((1, None), (None, [1]), (None, [1, 2])):
        assert evaluation_config(run_dir, "latent", "cem", {}, pairs, seeds).paths.evaluation == str(
            run_dir / "eval_speed" / "cem")
    assert evaluation_config(run_dir, "latent", "cem", {}, 3, [0, 1, 2]).paths.evaluation == str(run_dir / "eval")
    assert not any(row["joint_hold"] for row in rows.values())  # the micro run holds by PD nowhere
    config = OmegaConf.load(run_dir / "config.yaml")  # a run whose amortized + CEM holds: its cold CEM rows do too
    config.evaluate.joint_hold.agents = ["amortized_cem"]
    OmegaConf.save(config, run_dir / "config.yaml")
    cold = evaluation_config(run_dir, "latent", "cem_1it", {"iterations": 1}, None, None, hold_as="amortized_cem")
    assert list(cold.evaluate.joint_hold.agents) == ["amortized_cem", "latent"]
    assert list(evaluation_config(run_dir, "latent", "cem", {}, None, None).evaluate.joint_hold.agents) == [
        "amortized_cem"]  # the run's own CEM as the run has it
    config.evaluate.joint_hold.agents = ["latent"]  # its CEM holds, amortized + CEM does not: nor do its cold rows
    OmegaConf.save(config, run_dir / "config.yaml")
    cold = evaluation_config(run_dir, "latent", "cem_1it", {"iterations": 1}, None, None, hold_as="amortized_cem")
    assert list(cold.evaluate.joint_hold.agents) == []


def test_encoder_speed_benchmark_runs(tmp_path):
    output = tmp_path / "encoder_speed.json"
    result = module_in_process("benchmarks.encoder_speed", "--encoder", "vjepa_micro", "--repeats", "1",
                               "--encode-batch", "4", "--threads", "1",
                               "--output", str(output))  # micro: bf16 is emulated on AVX2 CPUs
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(output.read_text())["results"]


def test_probe_over_pretraining_probes_exports_of_one_run(micro_run_dir, tmp_path):
    import shutil

    import numpy as np
    import torch

    from world_model.encoder import load_encoder, random_encoder

    shutil.copytree(micro_run_dir / "dataset", tmp_path / "run" / "dataset")
    result = module_in_process("benchmarks.probe_over_pretraining", str(tmp_path / "run"), "experiment=micro",
                               "--steps", "2,0", "probe.attentive.steps=5", "probe.attentive.seeds=[0,1]",
                               "probe.max_frames=40")
    assert result.returncode == 0, result.stderr[-2000:]
    output = tmp_path / "run" / "probe_over_pretraining"
    rows = json.loads((output / "probe_over_pretraining.json").read_text())["rows"]
    assert [row["step"] for row in rows] == [0, 2]
    for row in rows:  # the reacher's angles; no velocities
        assert set(row["linear"]) == set(row["attentive"]) == {"angles"}
        assert row["attentive"]["angles"] == pytest.approx(np.mean(row["attentive_by_probe_seed"]["angles"]))
    assert rows[0]["train_seconds"] == 0 < rows[1]["train_seconds"]
    assert (output / "probe_over_pretraining.png").stat().st_size > 1000 and (output / "config.yaml").is_file()
    start = load_encoder(str(output / "snapshots" / "step_00000"), "cpu")  # step 0: probe's random baseline, seed 0
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    baseline = random_encoder(start.config, 0, "cpu").encode_images(frames)
    assert torch.allclose(start.encode_images(frames), baseline, atol=1e-6)
    trained = load_encoder(str(output / "snapshots" / "step_00002"), "cpu").encode_images(frames)
    assert not torch.allclose(trained, baseline, atol=1e-6)


@pytest.mark.parametrize("args, expected", [
    (("benchmarks.planner_synthetic", "--action-dim", "0"),
     "argument --action-dim: '0' is invalid; expected a positive int"),
    (("benchmarks.predictor_inputs", "RUN", "--seed", "-1"), "argument --seed: '-1' is invalid; expected an int >= 0"),
    (("benchmarks.stage_times", "RUN"), "stages.json is missing; run `jepa-agent run hydra.run.dir="),
    (("benchmarks.encoder_ceiling", "RUN"), "is not a run directory"),
    (("benchmarks.planning_speed", "--smoke", "planner.sampels=10"), "Could not override 'planner.sampels'"),
    (("benchmarks.probe_over_pretraining", "RUN", "--steps", "5,-1"), "argument --steps: '5,-1' is invalid"),
    (("benchmarks.probe_over_pretraining", "RUN", "experiment=micro"), "no_run/dataset/train' does not exist"),
    (("benchmarks.pixels_or_latents", "experiment=micro"), "no run directory: pass hydra.run.dir=DIR"),
    (("benchmarks.pixels_or_latents", "--pairs", "3"), "'--pairs' is not an override"),
    (("benchmarks.success_vs_speed", "RUN", "--output", "speed.png"),
     "argument --output: 'speed.png' is invalid; expected a path ending in .json"),
    (("benchmarks.success_vs_speed", "RUN", "--seeds", "-1"),
     "argument --seeds: '-1' is invalid; expected an int >= 0"),
    (("benchmarks.success_vs_speed", "RUN", "--seeds", "0", "0"),
     "argument --seeds: [0, 0] is invalid; expected distinct seeds"),
    (("benchmarks.success_vs_speed", "RUN", "--warm-std", "nan"),
     "argument --warm-std: 'nan' is invalid; expected a positive number"),
    (("benchmarks.pixels_or_latents", "experiment=micro", "evaluate.pairz=3", "hydra.run.dir=RUN"),
     "Could not override 'evaluate.pairz'"),
])
def test_bad_benchmark_arguments_are_one_line_errors(tmp_path, args, expected):
    """A bad argument, run directory or override ends as one `error:` line and exit status 2, no traceback: each
    script's `main` under `run_main`, as `python -m` runs it (in this process: a subprocess would spend 3-6 s
    importing; the smoke tests above run the scripts as commands)."""
    module, *arguments = args
    arguments = [str(tmp_path / "no_run") if arg == "RUN" else arg for arg in arguments]
    result = module_in_process(module, *arguments)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr, result.stderr
