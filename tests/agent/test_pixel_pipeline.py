"""`jepa-agent run world_model=pixel` end to end (issue 27), into a copy of the micro latent run: the pixel
world model is trained on the same dataset, imagined, and evaluated beside the latent agent."""
from __future__ import annotations

import json
import shutil

import imageio.v3 as iio

from tests.conftest import cli


def test_pixel_world_model_runs_beside_the_latent_agent(micro_run_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(micro_run_dir, run_dir)
    result = cli("run", "experiment=micro", "world_model=pixel", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    for skipped in ("collect", "evaluate_random", "evaluate_oracle"):  # the same dataset, the same baselines
        assert f"[run] {skipped}: up to date, skipped" in result.stdout
    assert "[run] pretrain" not in result.stdout and "[run] embed" not in result.stdout  # no latent stage
    book = json.loads((run_dir / "stages.json").read_text())
    assert all(book[stage]["done"] for stage in ("train_pixel", "imagine_pixel", "evaluate_pixel", "evaluate_latent"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["agents"]) == ["pixel", "random", "oracle", "latent"]
    metrics = json.loads((run_dir / "eval" / "pixel" / "metrics.json").read_text())
    assert metrics["agent"] == "pixel" and metrics["episodes"] == 2
    assert metrics["energy"]["frame_distance"] == "l2" and metrics["planning_latency"]["count"] >= 2
    model_dir = run_dir / "pixel_model"
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["parameters"] > 0 and meta["steps"] >= 1 and meta["task"] == "reacher"
    errors = json.loads((model_dir / "imagination" / "rollout_error.json").read_text())
    assert errors["horizon_blocks"] == [1, 2, 3] and len(errors["ratio"]) == len(errors["random_action_mse"]) == 3
    frames = iio.imread(model_dir / "imagination" / "episode0.mp4")
    assert frames.shape[0] == 5  # 20 steps / block 5 + 1 frames
    assert frames.shape[2] > 2 * (frames.shape[1] - 24)  # real | imagined, above a caption

    refused = cli("run", "experiment=micro", "world_model=pixel", "pixel.energy=l3",
                  f"hydra.run.dir={tmp_path / 'bad'}")
    assert refused.returncode == 2 and not (tmp_path / "bad").exists()
    assert refused.stderr.strip() == "error: pixel.energy='l3' is invalid; expected one of ['l2', 'l1', 'l2_blur']"
