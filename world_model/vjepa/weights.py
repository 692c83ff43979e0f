"""V-JEPA 2 weights in the transformers format: find them, check them, read them, write them.

One format serves the official checkpoints and ours: a directory holding `config.json`
(model_type "vjepa2") and `model.safetensors` (or sharded `model.safetensors.index.json`), as
`VJEPA2Model.save_pretrained` writes it. Only safetensors are read, so loading never runs code from a
file. Keys are those of `VJEPA2Model` (`encoder.*`, `predictor.*`); a `VJEPA2ForVideoClassification`
checkpoint (`vjepa2.encoder.*`) is read too.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import VJEPA2Config, VJEPA2Model
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2Encoder

from bookkeeping.io import read_json

ENCODER_PREFIXES = ("encoder.", "vjepa2.encoder.")
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"


def resolve_source(source: str) -> Path:
    """Directory of a local path, or of a hub id's snapshot in the local Hugging Face cache."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(
                f"encoder source {source!r} is a file; expected a directory of transformers VJEPA2 "
                "weights (config.json + model.safetensors) or a hub id")
        return path
    looks_like_hub_id = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise FileNotFoundError(f"encoder source {source!r} does not exist; expected a directory of "
                                "transformers VJEPA2 weights, a pretrain output directory or a hub id")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=source, local_files_only=True))
    except Exception:  # the hub client raises several error types for "not cached"
        raise FileNotFoundError(
            f"encoder source {source!r} is not in the local Hugging Face cache and weights cannot be "
            f"downloaded here; fetch it elsewhere with `hf download {source}` and copy the cache") from None


def read_config(directory: Path) -> VJEPA2Config:
    """The VJEPA2Config in `directory/config.json`; errors if it is missing or another model."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} has no config.json: not a transformers V-JEPA 2 "
                                "directory (nor a finished pretrain output)")
    fields = read_json(config_path)
    if fields.get("model_type") != "vjepa2":
        raise ValueError(f"{str(config_path)!r} describes model_type {fields.get('model_type')!r}, "
                         "expected 'vjepa2' (a V-JEPA 2 encoder)")
    return VJEPA2Config.from_dict(fields)


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (one file, or the shards of an index)."""
    if (directory / WEIGHTS_FILE).is_file():
        return [directory / WEIGHTS_FILE]
    if (directory / WEIGHTS_INDEX_FILE).is_file():
        weight_map = read_json(directory / WEIGHTS_INDEX_FILE)["weight_map"]
        return [directory / name for name in sorted(set(weight_map.values()))]
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise ValueError(f"{str(directory)!r} holds only pickle weights (.bin/.pt), which can execute "
                         f"code when loaded; expected {WEIGHTS_FILE} (convert with safetensors first)")
    raise FileNotFoundError(f"{str(directory)!r} has no {WEIGHTS_FILE}: not a transformers V-JEPA 2 "
                            "directory (nor a finished pretrain output)")


def read_encoder_state(directory: Path) -> dict[str, torch.Tensor]:
    """The encoder tensors of a checkpoint, keyed as in `VJEPA2Encoder.state_dict()`."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(directory):
        try:
            with safe_open(str(file), framework="pt") as tensors:
                for key in tensors.keys():
                    prefix = next((p for p in ENCODER_PREFIXES if key.startswith(p)), None)
                    if prefix is not None:
                        state[key[len(prefix):]] = tensors.get_tensor(key)
        except SafetensorError as error:
            raise ValueError(f"{str(file)!r} is not a readable safetensors file ({error}); "
                             "expected V-JEPA 2 weights as save_pretrained writes them") from None
    if not state:
        raise ValueError(f"{str(directory)!r} holds no V-JEPA 2 encoder weights (no 'encoder.*' "
                         f"tensors in {', '.join(f.name for f in weight_files(directory))})")
    return state


def check_encoder_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                        where: str) -> None:
    """Raise a one-line ValueError naming the first key or shape that disagrees with the config."""
    for key, tensor in expected.items():
        if key not in state:
            raise ValueError(f"{where}: weight 'encoder.{key}' required by config.json is missing "
                             "(config and weights disagree)")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(f"{where}: weight 'encoder.{key}' has shape {tuple(state[key].shape)} but "
                             f"config.json implies {tuple(tensor.shape)}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"{where}: weight 'encoder.{unexpected[0]}' is not part of the encoder that "
                         f"config.json describes ({len(unexpected)} unexpected tensors)")


def load_vjepa2_encoder(directory: Path) -> tuple[VJEPA2Config, VJEPA2Encoder]:
    """Read a checked float32 `VJEPA2Encoder` (eval mode) and its config from a weights directory."""
    config = read_config(directory)
    with torch.device("meta"):  # no random init of weights that are overwritten anyway
        encoder = VJEPA2Model(config).encoder
    state = read_encoder_state(directory)
    check_encoder_state(state, encoder.state_dict(), str(directory))
    encoder.load_state_dict(state, assign=True, strict=True)
    return config, encoder.float().eval()


def random_vjepa2_encoder(config: VJEPA2Config, seed: int) -> VJEPA2Encoder:
    """A randomly initialised encoder of the given architecture (transformers' own init), eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VJEPA2Model(config).encoder.eval()


def save_vjepa2(model: VJEPA2Model, directory: str | os.PathLike) -> Path:
    """Write `model` with `save_pretrained` into `directory` without ever exposing a half file.

    The files are written into a temporary sibling folder and renamed into place one by one, weights
    first and config.json last; other content of `directory` (checkpoints, metrics) is kept.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    written = sorted(staging.iterdir(), key=lambda file: file.name == "config.json")
    for file in written:
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(file, directory / file.name)
    shutil.rmtree(staging, ignore_errors=True)
    return directory
