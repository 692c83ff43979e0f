"""The frozen encoder: official-format round trip on tiny random VJEPA2 models, preprocessing, shapes,
bad input and bad checkpoints."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import VJEPA2Config, VJEPA2Model

import world_model
from world_model.encoder import IMAGENET_MEAN, IMAGENET_STD, load_encoder




TINY_CONFIGS = {
    "patch4-tubelet2": dict(crop_size=16, patch_size=4, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, pred_hidden_size=16, pred_num_hidden_layers=1,
                            pred_num_attention_heads=2, frames_per_clip=4),
    "patch8-tubelet1": dict(crop_size=24, patch_size=8, tubelet_size=1, hidden_size=48, num_hidden_layers=3,
                            num_attention_heads=4, pred_hidden_size=24, pred_num_hidden_layers=1,
                            pred_num_attention_heads=2, frames_per_clip=2, mlp_ratio=2.0),
}


def save_tiny_model(directory, seed: int = 0, **fields) -> VJEPA2Model:
    torch.manual_seed(seed)
    model = VJEPA2Model(VJEPA2Config(**fields)).eval()
    model.save_pretrained(directory)
    return model


def reference_pixels(frames: np.ndarray) -> torch.Tensor:
    """ImageNet normalisation written out independently: uint8 (B, T, H, W, 3) -> (B, T, 3, H, W)."""
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    scaled = (frames.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(scaled).permute(0, 1, 4, 2, 3)


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_tokens_equal_transformers_encoder_output(tmp_path, name):
    fields = TINY_CONFIGS[name]
    model = save_tiny_model(tmp_path, **fields)
    encoder = world_model.load_encoder(str(tmp_path), device="cpu", chunk_size=2)
    size, tubelet, patch = fields["crop_size"], fields["tubelet_size"], fields["patch_size"]
    frames = np.random.default_rng(0).integers(0, 256, (3, 2 * tubelet, size, size, 3), dtype=np.uint8)

    tokens = encoder.encode(frames)
    with torch.no_grad():
        expected = model(pixel_values_videos=reference_pixels(frames), skip_predictor=True).last_hidden_state

    grid = size // patch
    assert encoder.grid == (grid, grid) and encoder.dim == fields["hidden_size"]
    assert encoder.tubelet_size == tubelet and encoder.input_size == size
    assert tokens.dtype == torch.float32 and tokens.shape == (3, 2, grid * grid, fields["hidden_size"])
    torch.testing.assert_close(tokens.reshape(3, -1, fields["hidden_size"]), expected, rtol=1e-4, atol=1e-4)


def test_single_image_fills_one_tubelet_and_odd_lengths_pad_with_last_frame(tmp_path):
    save_tiny_model(tmp_path, **TINY_CONFIGS["patch4-tubelet2"])
    encoder = load_encoder(str(tmp_path), device="cpu")
    frames = np.random.default_rng(1).integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)

    images = encoder.encode_images(frames[:, 0])
    repeated = encoder.encode(np.repeat(frames[:, :1], 2, axis=1))[:, 0]
    assert images.shape == (2, 16, 32)
    torch.testing.assert_close(images, repeated)

    odd = encoder.encode(frames)  # T = 3 -> T' = 2, the last tubelet is (frame 2, frame 2)
    padded = encoder.encode(np.concatenate([frames, frames[:, 2:]], axis=1))
    assert odd.shape == (2, 2, 16, 32)
    torch.testing.assert_close(odd, padded)


def smooth_image(size: int) -> np.ndarray:
    """A low-frequency colour pattern sampled at pixel centres: uint8 (1, size, size, 3)."""
    centres = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(centres, centres, indexing="ij")
    channels = [np.sin(2 * np.pi * x), np.cos(2 * np.pi * y), np.sin(2 * np.pi * (x + y))]
    return (128 + 100 * np.stack(channels, axis=-1)).round().astype(np.uint8)[None]


@pytest.mark.parametrize("size", [48, 96])
def test_inputs_of_other_sizes_are_resized_to_the_crop_size(tmp_path, size):
    save_tiny_model(tmp_path, **TINY_CONFIGS["patch4-tubelet2"])
    encoder = load_encoder(str(tmp_path), device="cpu")

    tokens = encoder.encode_images(smooth_image(size))

    assert tokens.shape == (1, 16, 32)  # the crop-size grid, not (size / 4) ** 2 tokens
    at_crop_size = encoder.encode_images(smooth_image(16))
    other_image = encoder.encode_images(smooth_image(16)[:, ::-1].copy())
    assert (tokens - at_crop_size).abs().mean() < 0.2 * (other_image - at_crop_size).abs().mean()


def test_bf16_autocast_stays_close_to_fp32_and_returns_float32(tmp_path):
    save_tiny_model(tmp_path, **TINY_CONFIGS["patch4-tubelet2"])
    frames = np.random.default_rng(3).integers(0, 256, (4, 2, 16, 16, 3), dtype=np.uint8)
    full = load_encoder(str(tmp_path), device="cpu").encode(frames)
    half = load_encoder(str(tmp_path), device="cpu", autocast_bf16=True).encode(frames)
    assert half.dtype == torch.float32
    assert (half - full).abs().mean() < 0.05 * full.abs().mean()


def test_bf16_autocast_is_the_one_switch_every_model_runs_under():
    from world_model.device import bf16_autocast

    weights, inputs = torch.randn(8, 8), torch.randn(4, 8)
    with bf16_autocast("cpu", True):
        assert (inputs @ weights).dtype == torch.bfloat16
    with bf16_autocast(torch.device("cpu"), False):
        assert (inputs @ weights).dtype == torch.float32


PRECISION_KEYS = ("encoder.pretrain.autocast_bf16", "encoder.encode.autocast_bf16", "predictor.train.bf16",
                  "evaluate.autocast_bf16", "diagnose.bf16")


@pytest.mark.parametrize("native", [False, True])
def test_configs_pick_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, native):
    """Emulated bf16 (an AVX2 CPU) is 6-9x slower than fp32, native bf16 (AVX512-BF16, AMX) faster."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for encoder in ("vjepa_tiny", "vjepa2_vitl"):
        cfg = compose_config(".", ["device=cpu", f"encoder={encoder}"])
        keys = PRECISION_KEYS if encoder == "vjepa_tiny" else PRECISION_KEYS[1:]  # released weights: no pretrain
        assert {key: OmegaConf.select(cfg, key) for key in keys} == dict.fromkeys(keys, native)
    chosen = compose_config(".", ["device=cpu", *(f"{key}={str(not native).lower()}" for key in PRECISION_KEYS)])
    assert all(OmegaConf.select(chosen, key) is (not native) for key in PRECISION_KEYS)  # set by hand: it wins


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_an_unavailable_device_leaves_precision_to_the_device_check():
    from agent.config import native_bf16

    assert native_bf16("cuda") is False and native_bf16("nonsense") is False


def test_fingerprint_is_stable_and_tells_weights_apart(tmp_path):
    save_tiny_model(tmp_path / "a", seed=0, **TINY_CONFIGS["patch4-tubelet2"])
    save_tiny_model(tmp_path / "b", seed=1, **TINY_CONFIGS["patch4-tubelet2"])
    first = load_encoder(str(tmp_path / "a")).fingerprint
    assert first == load_encoder(str(tmp_path / "a")).fingerprint
    assert first != load_encoder(str(tmp_path / "b")).fingerprint
    assert len(first) == 64


@pytest.mark.parametrize("frames, message", [
    (np.zeros((1, 2, 16, 16, 3), np.float32), "got dtype torch.float32"),
    (np.zeros((2, 16, 16, 3), np.uint8), "rank 4"),
    (np.zeros((1, 2, 3, 16, 16), np.uint8), "channels first"),
    ([[1, 2, 3]], "uint8 array"),
])
def test_bad_frames_raise_one_line_errors_naming_the_expected_shape(tmp_path, frames, message):
    save_tiny_model(tmp_path, **TINY_CONFIGS["patch4-tubelet2"])
    with pytest.raises(ValueError, match=message) as error:
        load_encoder(str(tmp_path)).encode(frames)
    assert "\n" not in str(error.value) and "(B, T, H, W, 3)" in str(error.value)


def test_directories_that_are_not_vjepa_encoders_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_encoder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(str(tmp_path / "missing"))

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="model_type 'vit'"):
        load_encoder(str(tmp_path))

    VJEPA2Config(**TINY_CONFIGS["patch4-tubelet2"]).save_pretrained(tmp_path)
    torch.save({"encoder.layernorm.weight": torch.ones(32)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="only pickle weights"):
        load_encoder(str(tmp_path))

    save_file({"classifier.weight": torch.ones(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="no V-JEPA 2 encoder weights"):
        load_encoder(str(tmp_path))

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])  # truncated, as by an interrupted copy
    with pytest.raises(ValueError, match="model.safetensors' is not a readable safetensors file"):
        load_encoder(str(tmp_path))


def test_weights_that_disagree_with_the_config_name_the_mismatch(tmp_path):
    save_tiny_model(tmp_path, **TINY_CONFIGS["patch4-tubelet2"])
    VJEPA2Config(**{**TINY_CONFIGS["patch4-tubelet2"], "hidden_size": 48}).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'encoder\..*' has shape \(32.*config.json implies \(48"):
        load_encoder(str(tmp_path))

    VJEPA2Config(**{**TINY_CONFIGS["patch4-tubelet2"], "num_hidden_layers": 3}).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'encoder\.layer\.2\..*' required by config.json is missing"):
        load_encoder(str(tmp_path))


def test_uncached_hub_id_fails_offline_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load_encoder("facebook/vjepa2-vitl-fpc64-256")


def test_hub_id_is_served_from_the_local_cache(tmp_path, monkeypatch):
    """A hub id resolves to its snapshot in the HF cache layout, offline."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-vjepa2" / "snapshots" / ("0" * 40)
    model = save_tiny_model(snapshot, **TINY_CONFIGS["patch4-tubelet2"])
    (cache / "models--someone--tiny-vjepa2" / "refs").mkdir()
    (cache / "models--someone--tiny-vjepa2" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    encoder = load_encoder("someone/tiny-vjepa2")
    frames = np.zeros((1, 2, 16, 16, 3), np.uint8)
    with torch.no_grad():
        expected = model(pixel_values_videos=reference_pixels(frames), skip_predictor=True).last_hidden_state
    torch.testing.assert_close(encoder.encode(frames).reshape(1, -1, 32), expected, rtol=1e-4, atol=1e-4)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_broken_torchvision_does_not_stop_the_encoder(tmp_path):
    """PyPI's torchvision beside the CPU torch wheel fails to import inside transformers; the encoder hides it
    (one warning saying what to install) and loads and encodes a tiny official-format model all the same."""
    import subprocess
    import sys

    from tests.conftest import REPO

    package = tmp_path / "site" / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    (tmp_path / "site" / "torchvision-0.29.1.dist-info").mkdir()
    (tmp_path / "site" / "torchvision-0.29.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.29.1\n")
    save_tiny_model(tmp_path / "model", **TINY_CONFIGS["patch8-tubelet1"])
    script = ("import numpy as np; from world_model.encoder import load_encoder; "
              f"encoder = load_encoder({str(tmp_path / 'model')!r}); "
              "print(tuple(encoder.encode(np.zeros((1, 1, 24, 24, 3), np.uint8)).shape))")
    finished = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"})
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.strip() == "(1, 1, 9, 48)"
    assert "torchvision fails to import (operator torchvision::nms does not exist); the agent runs without it" in (
        finished.stderr)
