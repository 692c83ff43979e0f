"""Frozen evaluation: probe heads on known targets, and the probe stage on a tiny real dataset."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import VJEPA2Config, VJEPA2Model

from tests.conftest import compose_config
from world_model import probe
from world_model.vjepa.probe_heads import fit_attentive_probe, fit_ridge, r2_scores, ridge_weights


def test_r2_is_one_for_perfect_and_zero_for_the_mean():
    target = torch.randn(50, 2, dtype=torch.float64)
    torch.testing.assert_close(r2_scores(target, target), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(r2_scores(target.mean(0).expand(50, 2), target), torch.zeros(2, dtype=torch.float64))


def test_ridge_recovers_a_linear_map_on_held_out_samples():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 16, generator=generator)
    targets = features @ torch.randn(16, 3, generator=generator) + 5.0
    ridge = fit_ridge(features[:300], targets[:300], torch.arange(300) // 10, alphas=[1e-4, 1e-2, 1.0])
    assert ridge.alpha <= 1e-2
    assert r2_scores(ridge.predict(features[300:]), targets[300:].double()).min() > 0.999


@pytest.mark.parametrize("samples, dims", [(60, 12), (12, 60)])  # the F x F path and the M x M one
def test_ridge_weights_equal_the_direct_solve_for_every_strength(samples, dims):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(samples, dims, generator=generator, dtype=torch.float64)
    targets = torch.randn(samples, 3, generator=generator, dtype=torch.float64)
    alphas = [1e-3, 0.1, 10.0]
    for alpha, weights in zip(alphas, ridge_weights(features, targets, alphas), strict=True):
        gram = features.T @ features + alpha * samples * torch.eye(dims, dtype=torch.float64)
        torch.testing.assert_close(weights, torch.linalg.solve(gram, features.T @ targets))


def test_attentive_probe_reads_a_value_at_one_token_position_where_mean_pooling_cannot():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(600, 9, 8, generator=generator)  # (M, N, D)
    targets = tokens[:, 4, :2] * 3.0  # only the centre token matters
    fitted = fit_attentive_probe(tokens[:500].half(), targets[:500], steps=300, batch_size=128, lr=3e-3,
                                 weight_decay=0.0, width=16, num_queries=2, num_heads=2)
    ridge = fit_ridge(tokens[:500].mean(1), targets[:500], torch.arange(500) // 10, alphas=[1e-3, 1.0])
    attentive_r2 = r2_scores(fitted.predict(tokens[500:]), targets[500:].double()).min()
    assert attentive_r2 > 0.6
    assert attentive_r2 > 2 * r2_scores(ridge.predict(tokens[500:].mean(1)), targets[500:].double()).max()


def test_state_targets_encode_angles_as_sin_cos():
    qpos, qvel = np.array([[0.0, np.pi / 2]]), np.array([[1.0, -1.0]])
    targets = probe.state_targets(qpos, qvel, angles=True)
    np.testing.assert_allclose(targets["angles"], [[0.0, 1.0, 1.0, 0.0]], atol=1e-12)
    assert set(probe.state_targets(qpos, qvel, angles=False)) == {"positions", "velocities"}


def test_clear_win_needs_the_margin_over_the_best_random_seed():
    encoder = {"linear": {"angles": 0.80, "velocities": 0.30}, "attentive": {"angles": -0.5, "velocities": 0.9}}
    random_by_seed = [
        {"linear": {"angles": 0.70, "velocities": 0.20}, "attentive": {"angles": -1.0, "velocities": 0.5}},
        {"linear": {"angles": 0.78, "velocities": 0.10}, "attentive": {"angles": -0.9, "velocities": 0.6}},
    ]
    comparison = probe.compare_with_random(encoder, random_by_seed, clear_margin=0.05)
    assert comparison["random_mean"]["linear"]["angles"] == pytest.approx(0.74)
    assert comparison["margin_over_best_random"]["linear"]["angles"] == pytest.approx(0.02)
    assert comparison["clearly_beats_random"]["linear"] == {"angles": False, "velocities": True}
    # R^2 < 0 reads nothing
    assert comparison["clearly_beats_random"]["attentive"] == {"angles": False, "velocities": True}


@pytest.mark.parametrize("override, expected", [
    ("probe.random_seeds=[]", "a non-empty list of distinct non-negative ints"),
    ("probe.attentive.seeds=[-1]", "a non-empty list of distinct non-negative ints"),
    ("probe.frame_stride=0", "a positive int"),
    ("probe.attentive.steps=abc", "a positive int"),
    ("probe.ridge_alphas=[]", "a non-empty list of positive numbers"),
    ("probe.attentive.lr=0", "a positive number"),
])
def test_probe_refuses_bad_settings_before_writing(tiny_dataset_dir, tmp_path, override, expected):
    cfg = compose_config(tmp_path, [f"paths.dataset={tiny_dataset_dir}", override])
    with pytest.raises(ValueError, match=rf"^{override.split('=')[0]}=.* is invalid; expected {expected}"):
        probe.main(cfg)
    assert not (tmp_path / "probe").exists()


def test_probe_stage_writes_r2_for_encoder_and_random_baseline(tiny_dataset_dir, tmp_path):
    torch.manual_seed(1)  # not a random baseline's seed
    config = VJEPA2Config(crop_size=32, patch_size=8, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=2, pred_hidden_size=16, pred_num_hidden_layers=1,
                          pred_num_attention_heads=2, frames_per_clip=2)
    VJEPA2Model(config).save_pretrained(tmp_path / "encoder")
    cfg = compose_config(tmp_path, [f"paths.dataset={tiny_dataset_dir}", "device=cpu", "probe.max_frames=120",
                                    "probe.attentive.steps=20", "probe.attentive.width=16",
                                    "probe.random_seeds=[0,2]", "probe.attentive.seeds=[0,3]"])

    probe.main(cfg)

    report = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert report["task"] == "reacher" and report["train_frames"] == 120 and report["test_frames"] > 0
    assert report["encoder"]["grid"] == [4, 4] and len(report["encoder"]["fingerprint"]) == 64
    for encoder in ("encoder", "random"):
        for kind in ("linear", "attentive"):
            scores = report["r2"][encoder][kind]
            assert set(scores) == {"angles", "velocities"}
            assert all(np.isfinite(value) and value <= 1.0 for value in scores.values())
    assert report["r2"]["encoder"] != report["r2"]["random"]
    assert set(report["r2"]["random_by_seed"]) == {"0", "2"} and report["linear_pool_grid"] == 4
    assert report["attentive_probe_seeds"] == [0, 3] and report["settings"]["attentive"]["steps"] == 20
    per_probe_seed = report["attentive_r2_by_probe_seed"]
    for group, value in report["r2"]["encoder"]["attentive"].items():
        assert len(set(per_probe_seed["encoder"][group])) == 2  # two probe seeds, two different probes
        assert value == pytest.approx(np.mean(per_probe_seed["encoder"][group]))
        for seed in ("0", "2"):
            assert report["r2"]["random_by_seed"][seed]["attentive"][group] == pytest.approx(
                np.mean(per_probe_seed["random_by_seed"][seed][group]))
    for kind in ("linear", "attentive"):
        for group, value in report["r2"]["encoder"][kind].items():
            seeds = [report["r2"]["random_by_seed"][seed][kind][group] for seed in ("0", "2")]
            assert report["r2"]["random"][kind][group] == pytest.approx(np.mean(seeds))
            assert report["margin_over_best_random"][kind][group] == pytest.approx(value - max(seeds))
            assert report["clearly_beats_random"][kind][group] == (value - max(seeds) >= report["clear_margin"]
                                                                   and value > 0)
    assert (tmp_path / "probe" / "probe.png").stat().st_size > 1000
    assert (tmp_path / "probe" / "config.yaml").is_file()


def test_probe_targets_split_slides_from_hinges():
    qpos, qvel = np.array([[0.5, 1.0], [1.5, -1.0]]), np.zeros((2, 2))
    assert set(probe.state_targets(qpos, qvel, True)) == {"angles", "velocities"}  # the reacher
    assert set(probe.state_targets(qpos, qvel, False)) == {"positions", "velocities"}  # the point mass
    mixed = probe.state_targets(qpos, qvel, (False, True))  # a cart's slide, a pole's hinge
    np.testing.assert_array_equal(mixed["positions"], qpos[:, :1])
    np.testing.assert_allclose(mixed["angles"], np.stack([np.sin(qpos[:, 1]), np.cos(qpos[:, 1])], axis=1))


def test_a_dataset_without_its_hinge_joints_is_refused_before_writing(tiny_dataset_dir, tmp_path):
    """A dataset collected before `collect` recorded the task's angular_positions: one line naming it."""
    old = tmp_path / "old"
    shutil.copytree(tiny_dataset_dir, old)
    manifest = json.loads((old / "train" / "manifest.json").read_text())
    del manifest["meta"]["angular_positions"]
    (old / "train" / "manifest.json").write_text(json.dumps(manifest))
    unrecorded = rf"^dataset '{old / 'train'}' records no angular_positions .* collect it again$"
    with pytest.raises(ValueError, match=unrecorded):
        probe.main(compose_config(tmp_path / "run", [f"paths.dataset={old}"]))
    assert not (tmp_path / "run" / "probe").exists()
