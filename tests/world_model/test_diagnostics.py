"""Diagnostics (`diagnose`) on a tiny trained predictor: JSON and PNGs written, explicit paths accepted,
a predictor made for another action dimension refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.config import compose_config
from tests.world_model.test_train_predictor import TINY_PREDICTOR, embedded_run  # noqa: F401  (fixture)
from world_model import diagnostics, train_predictor

TINY_DIAGNOSE = ["diagnose.horizon=3", "diagnose.rollout_windows=16", "diagnose.retrieval_transitions=20",
                 "diagnose.landscape_examples=2", "diagnose.landscape_grid=5", "diagnose.bf16=false"]


@pytest.fixture(scope="module")
def trained_run(embedded_run) -> Path:  # noqa: F811
    train_predictor.main(compose_config(embedded_run, ["device=cpu", *TINY_PREDICTOR, "predictor.train.epochs=1"]))
    return embedded_run


def test_diagnose_writes_json_and_plots(trained_run, tmp_path):
    cfg = compose_config(trained_run, ["device=cpu", *TINY_PREDICTOR, *TINY_DIAGNOSE,
                                       f"diagnose.output_dir={tmp_path / 'diagnostics'}"])
    diagnostics.main(cfg)
    output = tmp_path / "diagnostics"
    for name in ("diagnostics.json", "rollout_error.png", "retrieval.png", "energy_landscape.png", "config.yaml"):
        assert (output / name).stat().st_size > 0
    results = json.loads((output / "diagnostics.json").read_text())
    rollout = results["rollout_error"]
    assert rollout["horizon_blocks"] == [1, 2, 3] and len(rollout["model"]) == len(rollout["copy_last"]) == 3
    assert all(0 < value < 1 for value in results["retrieval"]["mrr"].values())
    example = results["energy_landscape"]["examples"][0]
    assert len(example["energy"]) == 5 and len(example["energy"][0]) == 5
    energies = [value for row in example["energy"] for value in row]
    assert max(energies) > min(energies)  # the first action block changes the prediction


def test_explicit_paths_from_another_run_dir(trained_run, tmp_path):
    cfg = compose_config(tmp_path, ["device=cpu", *TINY_DIAGNOSE, f"paths.predictor={trained_run / 'predictor'}",
                                    f"paths.latents={trained_run / 'latents'}"])
    diagnostics.main(cfg)
    assert (tmp_path / "diagnostics" / "diagnostics.json").exists()


def test_predictor_for_another_action_dim_is_refused(trained_run, tmp_path):
    shutil.copytree(trained_run / "predictor", tmp_path / "predictor")
    meta_path = tmp_path / "predictor" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "action_dim": 3}))
    cfg = compose_config(tmp_path, ["device=cpu", *TINY_DIAGNOSE, f"paths.latents={trained_run / 'latents'}"])
    with pytest.raises(ValueError, match="action dim mismatch: the predictor has 3 but latent cache .* has 2"):
        diagnostics.main(cfg)


def test_diagnose_a_predictor_with_a_proprio_token(trained_run, tmp_path):
    overrides = ["device=cpu", *TINY_PREDICTOR, "predictor.use_proprio=true", f"paths.predictor={tmp_path / 'p'}"]
    train_predictor.main(compose_config(trained_run, [*overrides, "predictor.train.epochs=1"]))
    diagnostics.main(compose_config(trained_run, [*overrides, *TINY_DIAGNOSE,
                                                  f"diagnose.output_dir={tmp_path / 'diagnostics'}"]))
    results = json.loads((tmp_path / "diagnostics" / "diagnostics.json").read_text())
    assert results["model"]["proprio_dim"] == 4 and len(results["rollout_error"]["model"]) == 3


@pytest.mark.parametrize("override", ["diagnose.rollout_windows=0", "diagnose.horizon=abc", "diagnose.goal_frames=0"])
def test_bad_settings_are_refused_naming_the_key(tmp_path, override):
    cfg = compose_config(tmp_path, [override])
    with pytest.raises(ValueError, match=rf"^{override.split('=')[0]}=.* is invalid; expected a positive int"):
        diagnostics.main(cfg)


def test_diagnose_reads_the_object_along_rollouts_with_a_latent_readout(trained_run, tmp_path):
    """With a latent readout beside the predictor, diagnose says how far the positions read from rollouts lie
    from the true ones, against copying the last position and reading the true latents."""
    overrides = ["device=cpu", *TINY_PREDICTOR, f"paths.predictor={tmp_path / 'p'}",
                 "predictor.latent_readout.steps=20", "predictor.latent_readout.qpos_indices=[0,1]",
                 "predictor.latent_readout.val_frames=50"]
    train_predictor.main(compose_config(trained_run, [*overrides, "predictor.train.epochs=1"]))
    diagnostics.main(compose_config(trained_run, [*overrides, *TINY_DIAGNOSE,
                                                  f"diagnose.output_dir={tmp_path / 'diagnostics'}"]))
    tracking = json.loads((tmp_path / "diagnostics" / "diagnostics.json").read_text())["object_readout"]
    assert tracking["qpos_indices"] == [0, 1] and tracking["horizon_blocks"] == [1, 2, 3]
    assert all(len(values) == 3 and min(values) > 0 for values in tracking["all"].values())
    assert tracking["all"]["copy_last"][0] < tracking["all"]["copy_last"][-1]  # the arm moves away from where it was
    assert 0 <= tracking["moving_windows"] <= tracking["windows"] == 16
    assert (tracking["moving_windows"] == 0) == (tracking["moving"]["predictor"] is None)
    assert (tmp_path / "diagnostics" / "object_readout.png").stat().st_size > 0


def test_diagnose_places_goals_with_the_readout_and_the_nearest_frames(trained_run, tmp_path):
    """With the energy's position readout beside the predictor, diagnose says how far each way of reading a goal's
    positions lands from the true ones; on training frames the nearest frame is the frame itself."""
    overrides = ["device=cpu", *TINY_PREDICTOR, f"paths.predictor={tmp_path / 'p'}", "predictor.readout.steps=5",
                 "predictor.readout.batch_size=16", "predictor.readout.val_frames=20"]
    train_predictor.main(compose_config(trained_run, [*overrides, "predictor.train.epochs=1"]))
    diagnostics.main(compose_config(trained_run, [*overrides, *TINY_DIAGNOSE, "diagnose.goal_frames=40",
                                                  "diagnose.split=train", "evaluate.energy.goal_neighbours=1",
                                                  f"diagnose.output_dir={tmp_path / 'diagnostics'}"]))
    goal = json.loads((tmp_path / "diagnostics" / "diagnostics.json").read_text())["goal_positions"]
    assert goal["frames"] == 40 and goal["neighbours"] == 1
    assert goal["nearest_frames"]["p90"] < 1e-6 < goal["readout"]["median"]
    assert len(goal["readout"]["quantiles"]) == len(goal["quantile_levels"]) == 21
    assert (tmp_path / "diagnostics" / "goal_positions.png").stat().st_size > 0
