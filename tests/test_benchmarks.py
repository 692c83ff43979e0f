"""The benchmark scripts run in smoke mode and write their JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

RESULTS = REPO / "benchmarks" / "results"


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("module, output", [
    ("benchmarks.collect_speed", "collect_speed_smoke.json"),
    ("benchmarks.planning_speed", "planning_speed_smoke.json"),
    ("benchmarks.planner_synthetic", "planner_synthetic_smoke.json"),
])
def test_speed_benchmark_smoke(module, output):
    result = run_module(module, "--smoke")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((RESULTS / output).read_text())


def test_run_benchmarks_on_a_finished_run(micro_run_dir):
    result = run_module("benchmarks.stage_times", str(micro_run_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pretrain" in result.stdout and "total" in result.stdout
    output = RESULTS / "sweep_summary_smoke.json"
    result = run_module("benchmarks.sweep_summary", str(micro_run_dir), str(micro_run_dir), "--output", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = json.loads(output.read_text())
    latent = json.loads((micro_run_dir / "summary.json").read_text())["agents"]["latent"]
    assert sweep["agents"]["latent"]["runs"] == 2 and sweep["agents"]["latent"]["episodes"] == 2 * latent["episodes"]
    assert sweep["agents"]["latent"]["mean"] == pytest.approx(latent["success_rate"])
    assert sweep["agents"]["latent"]["pooled"] == pytest.approx(latent["success_rate"])
    assert sweep["runs"][0]["seed"] == 0 and sweep["runs"][0]["command"].startswith("jepa-agent run experiment=micro")
    result = run_module("benchmarks.success_vs_budget", str(micro_run_dir), "--smoke")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((RESULTS / "success_vs_budget_smoke.json").read_text())
    assert {row["agent"] for row in data["rows"]} == {"latent", "oracle"}
    assert (RESULTS / "success_vs_budget_smoke.png").stat().st_size > 1000
    output = RESULTS / "encoder_ceiling_smoke.json"
    result = run_module("benchmarks.encoder_ceiling", str(micro_run_dir), "--pairs", "2", "--samples", "8",
                        "--iterations", "2", "--output", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(output.read_text())
    assert data["encoder"]["success_rate"] in (0.0, 0.5, 1.0) and "random_encoder" in data  # 2 pairs
    output = RESULTS / "predictor_inputs_smoke.json"
    result = run_module("benchmarks.predictor_inputs", str(micro_run_dir), "--steps", "20", "--width", "32",
                        "--output", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(output.read_text())["rows"]
    assert [row["kind"] for row in rows] == ["latents", "latents+proprio", "latents+fourier", "fourier"]
    assert all(row["mse"] > 0 and row["copy_last_mse"] > 0 for row in rows)


def test_encoder_speed_benchmark_runs(tmp_path):
    output = tmp_path / "encoder_speed.json"
    result = run_module("benchmarks.encoder_speed", "--repeats", "1", "--encode-batch", "4", "--threads", "1",
                        "--output", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(output.read_text())["results"]


@pytest.mark.parametrize("args, expected", [
    (("benchmarks.planner_synthetic", "--action-dim", "0"), "argument --action-dim: '0' is invalid; expected a positive int"),
    (("benchmarks.predictor_inputs", "RUN", "--seed", "-1"), "argument --seed: '-1' is invalid; expected an int >= 0"),
    (("benchmarks.stage_times", "RUN"), "stages.json is missing; run `jepa-agent run hydra.run.dir="),
    (("benchmarks.encoder_ceiling", "RUN"), "is not a run directory"),
    (("benchmarks.planning_speed", "--smoke", "planner.sampels=10"), "Could not override 'planner.sampels'"),
])
def test_bad_benchmark_arguments_are_one_line_errors(tmp_path, args, expected):
    """A bad argument, run directory or override ends as one `error:` line and exit status 2, no traceback."""
    result = run_module(*(str(tmp_path / "no_run") if arg == "RUN" else arg for arg in args))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr, result.stderr
