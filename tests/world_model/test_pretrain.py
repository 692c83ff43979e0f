"""In-domain V-JEPA pretraining: masks, EMA, real training steps, checkpoints and the stage."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import VJEPA2Config

from envs.dataset import EpisodeStore
from tests.conftest import collect_tiny_dataset, compose_config
from tests.world_model.test_event_log import read_scalars
from world_model.encoder import load_encoder, preprocess_frames
from world_model.vjepa import pretrain
from world_model.vjepa.clips import ClipSampler, random_resized_crop
from world_model.vjepa.masking import BlockMaskSpec, MultiBlockMasker
from world_model.vjepa.model import VJEPAPretrainingModel, variance_covariance
from world_model.vjepa.trainer import Pretrainer, PretrainSettings, build_config

TINY_ARCHITECTURE = dict(crop_size=32, patch_size=4, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, pred_hidden_size=16, pred_num_hidden_layers=1,
                         pred_num_attention_heads=2)
TINY_OVERRIDES = [f"encoder.architecture.{key}={value}" for key, value in TINY_ARCHITECTURE.items()] + [
    "encoder.pretrain.batch_size=4", "encoder.pretrain.warmup_steps=1", "encoder.pretrain.val_clips=8",
    "encoder.pretrain.autocast_bf16=false", "device=cpu"]


def tiny_settings(**changes) -> PretrainSettings:
    """The preset's `encoder.pretrain` (configs/encoder/vjepa_tiny.yaml), short, constant-rate, fp32."""
    preset = OmegaConf.to_container(compose_config(Path("unused"), []).encoder.pretrain, resolve=True)
    values = dict(steps=20, batch_size=8, clip_frames=4, lr=2e-3, start_lr=2e-3, final_lr=2e-3, warmup_steps=0,
                  weight_decay=0.0, ema_start=0.99, ema_end=0.99, autocast_bf16=False)
    return PretrainSettings.from_mapping({**preset, **values, **changes})


def train_frames(dataset_dir):
    return EpisodeStore(dataset_dir / "train").array("frames")  # (E, T+1, 64, 64, 3)


def test_single_block_mask_has_the_exact_ratio_spans_all_tubelets_and_is_disjoint():
    masker = MultiBlockMasker(BlockMaskSpec(1, (0.25, 0.25), (1.0, 1.0)), grid=(8, 8), num_tubelets=3)
    context, target = masker(batch_size=5, generator=torch.Generator().manual_seed(0))

    assert target.shape == (5, 3 * 16) and context.shape == (5, 3 * 48)  # a 4 x 4 block of the 8 x 8 grid
    for context_ids, target_ids in zip(context, target):
        assert not set(context_ids.tolist()) & set(target_ids.tolist())
        assert sorted(context_ids.tolist() + target_ids.tolist()) == list(range(3 * 64))
        spatial = [set((target_ids[target_ids // 64 == t] % 64).tolist()) for t in range(3)]
        assert spatial[0] == spatial[1] == spatial[2] and len(spatial[0]) == 16
        rows, columns = zip(*(divmod(position, 8) for position in spatial[0]))
        assert max(rows) - min(rows) == 3 and max(columns) - min(columns) == 3  # one square block


@pytest.mark.parametrize("spec", [BlockMaskSpec(8, (0.15, 0.15)), BlockMaskSpec(2, (0.7, 0.7))])
def test_v_jepa_masks_are_disjoint_high_ratio_and_masked_through_every_tubelet(spec):
    masker = MultiBlockMasker(spec, grid=(8, 8), num_tubelets=2)
    generator = torch.Generator().manual_seed(1)
    ratios = []
    for _ in range(10):
        context, target = masker(batch_size=16, generator=generator)
        assert context.shape[1] >= 2 * 4  # min_context positions in each tubelet
        for context_ids, target_ids in zip(context, target):
            assert not set(context_ids.tolist()) & set(target_ids.tolist())
            assert torch.equal(target_ids[target_ids < 64] + 64, target_ids[target_ids >= 64])
            assert torch.equal(context_ids[context_ids < 64] + 64, context_ids[context_ids >= 64])
        ratios.append(1 - context.shape[1] / 128)
    assert 0.4 < sum(ratios) / len(ratios) < 0.95


def test_clip_sampler_mixes_in_still_clips_without_changing_the_moving_ones(tiny_dataset_dir):
    frames = train_frames(tiny_dataset_dir)
    moving = ClipSampler(frames, 4).sample(32, torch.Generator().manual_seed(5))  # (B, F, H, W, 3)
    mixed = ClipSampler(frames, 4, static_fraction=0.5).sample(32, torch.Generator().manual_seed(5))
    still = (mixed == mixed[:, :1]).flatten(1).all(dim=1)  # (B,) one frame repeated through the clip
    assert 0 < still.sum() < 32
    assert torch.equal(mixed[~still], moving[~still])  # the same draws, the other clips untouched
    for row in still.nonzero().flatten():  # each still clip shows one of its own clip's frames
        assert any(torch.equal(mixed[row, 0], moving[row, index]) for index in range(4))
    assert not (moving == moving[:, :1]).flatten(1).all(dim=1).any()  # the episodes move
    all_still = ClipSampler(frames, 4, static_fraction=1.0).sample(8, torch.Generator().manual_seed(5))
    assert (all_still == all_still[:, :1]).all()
    with pytest.raises(ValueError, match="static_fraction=-0.1"):
        ClipSampler(frames, 4, static_fraction=-0.1)


def test_random_resized_crop_zooms_one_window_per_clip_through_all_its_frames():
    ramp = torch.linspace(-1, 1, 16)  # (S,) pixel value = its x coordinate
    pixels = ramp.expand(4, 2, 3, 16, 16).clone()  # (B, F, C, S, S)
    whole = random_resized_crop(pixels, (1.0, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(whole, pixels, atol=1e-5, rtol=0)
    cropped = random_resized_crop(pixels, (0.25, 0.25), (1.0, 1.0), torch.Generator().manual_seed(0))
    assert cropped.shape == pixels.shape
    assert torch.equal(cropped[:, 0], cropped[:, 1])  # the same window in every frame of a clip
    span = cropped[..., -1] - cropped[..., 0]  # (B, F, C, S): a quarter of the area is half the width,
    torch.testing.assert_close(span, torch.full_like(span, 1.0), atol=1e-4, rtol=0)  # so half the ramp
    assert cropped[:, 0, 0, 0, 0].unique().numel() == 4  # each clip its own window


def test_ema_update_moves_each_target_weight_towards_the_context_encoder():
    config = build_config(TINY_ARCHITECTURE, clip_frames=4)
    model = VJEPAPretrainingModel(config)
    with torch.no_grad():
        for parameter in model.context_model.encoder.parameters():
            parameter.add_(torch.randn_like(parameter))
    before = [p.clone() for p in model.target_encoder.parameters()]
    context = [p.clone() for p in model.context_model.encoder.parameters()]

    model.update_target(momentum=0.9)

    for old, new, online in zip(before, model.target_encoder.parameters(), context):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
    assert not any(p.requires_grad for p in model.target_encoder.parameters())


def test_variance_covariance_is_zero_for_whitened_tokens_and_high_for_collapsed_ones():
    whitened = torch.randn(20000, 8) * 1.5  # (M, D): independent dimensions, std above 1
    variance, covariance = variance_covariance(whitened)
    assert variance.item() == 0.0 and covariance.item() < 0.01
    collapsed = torch.randn(20000, 1).expand(-1, 8) * 0.1  # every dimension the same, std 0.1
    variance, covariance = variance_covariance(collapsed)
    torch.testing.assert_close(variance, torch.tensor(0.9), atol=0.01, rtol=0)
    torch.testing.assert_close(covariance, torch.tensor(7 * 0.01 ** 2), atol=1e-4, rtol=0)  # 8*7 pairs / 8


def test_variance_covariance_penalty_adds_to_the_prediction_loss():
    config = build_config(TINY_ARCHITECTURE, clip_frames=4)
    pixels = torch.randn(2, 4, 3, 32, 32)
    masks = [MultiBlockMasker(BlockMaskSpec(1, (0.5, 0.5)), (8, 8), 2)(2, torch.Generator().manual_seed(0))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        plain = VJEPAPretrainingModel(config)
    penalised = VJEPAPretrainingModel(config, variance_weight=2.0, covariance_weight=3.0)
    penalised.load_state_dict(plain.state_dict())
    context = plain.encode_context(pixels, masks[0][0])
    variance, covariance = variance_covariance(context)

    torch.testing.assert_close(penalised.loss(pixels, masks)[0],
                               plain.loss(pixels, masks)[0] + 2.0 * variance + 3.0 * covariance)


def test_multi_layer_targets_are_the_mean_of_the_layer_normed_block_outputs():
    config = build_config(TINY_ARCHITECTURE, clip_frames=4)
    model = VJEPAPretrainingModel(config, target_layers=2).eval()
    pixels = torch.randn(2, 4, 3, 32, 32)
    block_outputs = []  # read by hooks during transformers' own forward pass
    hooks = [layer.register_forward_hook(lambda module, inputs, output: block_outputs.append(output[0]))
             for layer in model.target_encoder.layer]
    model.target_encoder(pixels)
    for hook in hooks:
        hook.remove()
    normed = [torch.nn.functional.layer_norm(tokens, (32,)) for tokens in block_outputs]
    expected = torch.nn.functional.layer_norm((normed[0] + normed[1]) / 2, (32,))

    torch.testing.assert_close(model.encode_targets(pixels), expected)
    with pytest.raises(ValueError, match="target_layers must be in \\[1, 2\\].*got 3"):
        VJEPAPretrainingModel(config, target_layers=3)


def test_context_encoder_sees_only_visible_tokens():
    model = VJEPAPretrainingModel(build_config(TINY_ARCHITECTURE, clip_frames=4)).eval()
    pixels = torch.randn(2, 4, 3, 32, 32)
    context, _ = MultiBlockMasker(BlockMaskSpec(1, (0.5, 0.5)), (8, 8), 2)(2, torch.Generator().manual_seed(0))
    tokens = model.encode_context(pixels, context)
    changed = pixels.clone()
    visible = torch.zeros(128, dtype=torch.bool)
    visible[context[0]] = True
    masked_cells = (~visible[:64]).reshape(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1)  # (32, 32)
    changed[0, :, :, masked_cells] = 5.0  # alter only masked patches, in every frame
    assert tokens.shape == (2, context.shape[1], 32)
    torch.testing.assert_close(model.encode_context(changed, context)[0], tokens[0])


def test_real_pretraining_steps_lower_the_validation_loss(tiny_dataset_dir):
    frames = train_frames(tiny_dataset_dir)
    trainer = Pretrainer(TINY_ARCHITECTURE, tiny_settings(batch_size=4), ClipSampler(frames, 4), torch.device("cpu"),
                         seed=0)
    val_clips = ClipSampler(EpisodeStore(tiny_dataset_dir / "val").array("frames"), 4).fixed(16, seed=0)

    before = trainer.evaluate(val_clips)["val_loss"]
    losses = [trainer.train_step()["loss"] for _ in range(20)]
    after = trainer.evaluate(val_clips)

    assert after["val_loss"] < 0.8 * before, (before, after, losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert after["effective_rank"] > 2 and after["token_std"] > 0.05  # not collapsed


def test_resuming_from_a_checkpoint_continues_exactly(tiny_dataset_dir, tmp_path):
    clips = ClipSampler(train_frames(tiny_dataset_dir), 4)
    settings = tiny_settings(steps=4, batch_size=4, warmup_steps=2, ema_end=1.0)
    straight = Pretrainer(TINY_ARCHITECTURE, settings, clips, torch.device("cpu"), seed=3)
    for _ in range(4):
        straight.train_step()

    interrupted = Pretrainer(TINY_ARCHITECTURE, settings, clips, torch.device("cpu"), seed=3)
    for _ in range(2):
        interrupted.train_step()
    interrupted.save_checkpoint(tmp_path / "last.pt")
    # fresh weights, the generator at step 0
    resumed = Pretrainer(TINY_ARCHITECTURE, settings, clips, torch.device("cpu"), seed=3)
    resumed.load_checkpoint(tmp_path / "last.pt")
    assert resumed.step == 2
    for _ in range(2):
        resumed.train_step()

    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)

    other = Pretrainer({**TINY_ARCHITECTURE, "hidden_size": 64}, settings, clips, torch.device("cpu"), seed=3)
    with pytest.raises(ValueError, match=r"other settings \(architecture.hidden_size: 32 -> 64\)"):
        other.load_checkpoint(tmp_path / "last.pt")
    assert not other.load_checkpoint(tmp_path / "last.pt", overwrite=True) and other.step == 0


def test_pretrain_stage_exports_a_loadable_encoder_resumes_and_skips_when_done(tiny_dataset_dir, tmp_path,
                                                                               monkeypatch):
    overrides = [*TINY_OVERRIDES, f"paths.dataset={tiny_dataset_dir}", "encoder.pretrain.checkpoint_every=2",
                 "encoder.pretrain.log_every=1", "encoder.pretrain.val_every=2", "encoder.pretrain.steps=4"]
    train_step = Pretrainer.train_step

    def die_at_step_3(self):
        if self.step == 2:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint
        return train_step(self)

    monkeypatch.setattr(Pretrainer, "train_step", die_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain.main(compose_config(tmp_path, overrides))
    monkeypatch.undo()
    output = tmp_path / "encoder"
    assert not (output / "pretrain_summary.json").exists()

    # the rerun resumes from the step-2 checkpoint and keeps the metrics of steps 1-2
    pretrain.main(compose_config(tmp_path, overrides))
    assert {"config.json", "model.safetensors", "metrics.csv", "config.yaml", "pretrain_summary.json"} <= {
        p.name for p in output.iterdir()}
    with open(output / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4]
    curves = output / "tensorboard"  # the same curves, each step once: the killed run's and the resumed one's
    assert read_scalars(curves, "train/loss") == [(int(row["step"]), pytest.approx(float(row["loss"]), rel=1e-5))
                                                  for row in rows]
    assert [step for step, _ in read_scalars(curves, "representation/effective_rank")] == [2, 4]
    stamp = (output / "model.safetensors").stat().st_mtime_ns
    pretrain.main(compose_config(tmp_path, overrides))
    assert (output / "model.safetensors").stat().st_mtime_ns == stamp  # finished: nothing redone
    # other settings: refused, naming them, unless run.overwrite=true
    config_before = (output / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"pretrained encoder .* other settings \(pretrain.lr: 0.0005 -> 0.001\); "
                                         "pass run.overwrite=true"):
        pretrain.main(compose_config(tmp_path, [*overrides, "encoder.pretrain.lr=1e-3"]))
    assert (output / "config.yaml").read_text() == config_before
    other_data = collect_tiny_dataset(tmp_path / "other_dataset", image_size=48)
    with pytest.raises(ValueError, match=r"other settings \(data.dataset.image_size: 64 -> 48\)"):
        pretrain.main(compose_config(tmp_path, [*overrides, f"paths.dataset={other_data}"]))
    pretrain.main(compose_config(tmp_path, [*overrides, "encoder.pretrain.lr=1e-3", "run.overwrite=true"]))
    summary = json.loads((output / "pretrain_summary.json").read_text())
    assert summary["identity"]["pretrain"]["lr"] == 1e-3 and summary["steps"] == 4

    encoder = load_encoder(str(output), device="cpu")
    checkpoint = torch.load(output / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 4 and encoder.grid == (8, 8) and encoder.dim == 32
    frames = EpisodeStore(tiny_dataset_dir / "val").array("frames")[:2, :4]  # (2, 4, 64, 64, 3)
    model = VJEPAPretrainingModel(VJEPA2Config.from_pretrained(output))
    model.load_state_dict(checkpoint["model"])
    expected = model.target_encoder(preprocess_frames(torch.from_numpy(frames), 32)).last_hidden_state
    torch.testing.assert_close(encoder.encode(frames).reshape(2, -1, 32), expected, rtol=1e-4, atol=1e-4)


def test_pretrain_refuses_released_weights_configs(tmp_path):
    with pytest.raises(ValueError, match="encoder=vjepa2_vitl loads released weights"):
        pretrain.main(compose_config(tmp_path, ["encoder=vjepa2_vitl"]))


@pytest.mark.parametrize("changes, named", [({"unknown_key": 1}, "unknown_key"),
                                            ({"ema_start": 0.9, "ema_end": 0.5}, "ema_start"),
                                            ({"covariance_weight": -0.1}, "covariance_weight"),
                                            ({"static_fraction": 1.5}, "static_fraction"),
                                            ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
                                            ({"crop_scale": 0.5}, "crop_scale"),
                                            ({"crop_aspect_ratio": (1.3, 0.7)}, "crop_aspect_ratio")])
def test_pretrain_settings_refuse_bad_values_by_name(changes, named):
    with pytest.raises(ValueError, match=named):
        tiny_settings(**changes)
