"""Crash-safe file writing, and the rule for reruns over what an earlier run left on disk.

Writing: to a temporary name in the same directory, fsync, then rename; a reader (or a rerun after
SIGKILL) sees either the old file or the complete new one, never half.

Reruns: every stage records what its outputs depend on (its identity: settings, seed, inputs). A rerun
with the same identity resumes; one with another identity is refused, naming the differing keys, unless
`run.overwrite=true`, which starts that stage afresh (`may_resume`).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temp name keeps the suffix: some writers (ffmpeg) pick the format from it
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    temp = Path(temp_name)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_UMASK)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def remove_leftover_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete what killed writes left under `directory`: temp files `.NAME.tmp-*` and temp folders
    `.NAME.tmp` (dataset shards). Call it only after a stage has finished and while no other command
    writes there. Returns what it deleted."""
    import shutil

    directory = Path(directory)
    if not directory.is_dir():
        return []
    leftovers = [path for path in directory.rglob(".*.tmp*")
                 if path.name.startswith(".") and (".tmp-" in path.name or path.name.endswith(".tmp"))]
    for path in sorted(leftovers, key=lambda found: len(found.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_write(path, lambda temp: temp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save(path: str | os.PathLike, save: Callable[[Path], None]) -> Path:
    """Atomic wrapper for libraries that write to a path themselves, e.g.
    `atomic_save(p, lambda temp: torch.save(state, temp))` or `safetensors.torch.save_file`."""
    return _atomic_write(path, save)


def save_module(module, directory: str | os.PathLike, weights_file: str, meta_file: str, meta: dict) -> Path:
    """A torch module's weights as safetensors (loading them runs no code) and `meta` plus its dataclass config
    (under "config") as JSON, both crash-safe, in `directory` -> the weights' path."""
    import dataclasses

    from safetensors.torch import save_file

    directory = Path(directory)
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    atomic_save(directory / weights_file, lambda temp: save_file(weights, str(temp)))
    atomic_write_json(directory / meta_file, {**meta, "config": dataclasses.asdict(module.config)})
    return directory / weights_file


def load_module(directory: str | os.PathLike, weights_file: str, meta_file: str, build: Callable[[dict], Any],
                what: str, train_hint: str, retrain_hint: str, device=None,
                check_meta: Callable[[dict], None] | None = None) -> tuple[Any, dict]:
    """A module saved by `save_module` -> (module on `device` (default cpu) in eval mode, meta). `build(config)`
    makes the untrained module from the meta's "config"; `check_meta(meta)` may refuse it first (e.g. trained on
    another encoder's tokens). Safetensors only: loading runs no code from the file.

    Missing files are a FileNotFoundError ending in `train_hint`; a meta that does not describe the module,
    weights that cannot be read (truncated, garbage) or of other shapes a one-line ValueError naming the file and
    ending in `retrain_hint`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    weights_path, meta_path = directory / weights_file, directory / meta_file
    if not weights_path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"no trained {what} in {str(directory)!r} (expected {weights_file} and {meta_file}); "
                                f"{train_hint}")
    meta = read_json(meta_path)
    if check_meta is not None:
        check_meta(meta)
    try:
        module = build(meta["config"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"{str(meta_path)!r} does not describe a {what} ({type(error).__name__}: {error}); "
                         f"{retrain_hint}") from None
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{str(weights_path)!r} cannot be read ({str(error).splitlines()[0]}); "
                         f"{retrain_hint}") from None
    try:
        module.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(f"{str(weights_path)!r} does not match the shapes in {meta_file} "
                         f"({str(error).splitlines()[-1].strip()}); {retrain_hint}") from None
    return module.to(device or "cpu").eval(), meta


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in `path`; a file that is not valid JSON (truncated, garbage) is a one-line ValueError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid JSON ({type(error).__name__}: {str(error).splitlines()[0]}); "
                         "restore it or delete it to have it made again") from None


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create `path` if needed and check it can be written, with a one-line error otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as error:
        raise PermissionError(f"{what} {str(path)!r} is not writable ({error.strerror or error})") from None
    return path


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"dotted.key": leaf value}."""
    if isinstance(node, dict):
        items: dict[str, Any] = {}
        for key, value in node.items():
            items.update(flatten(value, f"{prefix}{key}."))
        return items
    return {prefix[:-1]: node}


def differing_keys(saved: dict, current: dict) -> list[str]:
    """Sorted dotted keys whose values differ between two nested dicts (missing on one side counts)."""
    saved, current = flatten(saved), flatten(current)
    missing = "<missing>"
    return sorted(key for key in set(saved) | set(current) if saved.get(key, missing) != current.get(key, missing))


def describe_differences(saved: dict, current: dict, limit: int = 4) -> str:
    """'lr: 0.0005 -> 0.01, loss: 'l2' -> 'l1' and 3 more' (saved -> current; long values cut short,
    e.g. a hash to its first 24 characters)."""
    saved_flat, current_flat = flatten(saved), flatten(current)
    differing = differing_keys(saved, current)

    def shown_value(flat: dict, key: str) -> str:
        text = repr(flat.get(key, "<missing>"))
        return text if len(text) <= 40 else text[:24] + "..."

    shown = ", ".join(f"{key}: {shown_value(saved_flat, key)} -> {shown_value(current_flat, key)}"
                      for key in differing[:limit])
    return shown + (f" and {len(differing) - limit} more" if len(differing) > limit else "")


def read_checkpoint(path: str | os.PathLike, device, what: str, overwrite: bool) -> dict | None:
    """A checkpoint's state, read safely (`weights_only`: nothing in the file runs). One that cannot be
    read (another torch version's, say): None with `overwrite` (the caller starts afresh), otherwise a
    one-line ValueError."""
    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        if overwrite:
            print(f"{what} {str(path)!r} cannot be read ({type(error).__name__}); starting afresh (run.overwrite=true)")
            return None
        raise ValueError(f"{what} {str(path)!r} cannot be read ({type(error).__name__}); pass run.overwrite=true "
                         "to start afresh") from None


def may_resume(what: str, path: str | os.PathLike, saved: dict, current: dict, overwrite: bool,
               elsewhere: str = "write to another directory") -> bool:
    """True when `path` (made with identity `saved`) may be resumed under identity `current`; False
    when they differ and `overwrite` is set (start afresh); ValueError naming the differences otherwise."""
    if not differing_keys(saved, current):
        return True
    differences = describe_differences(saved, current) if saved else "no identity recorded"
    if overwrite:
        print(f"{what} {str(path)!r} was made with other settings ({differences}); "
              "starting afresh (run.overwrite=true)")
        return False
    raise ValueError(f"{what} {str(path)!r} was made with other settings ({differences}); pass "
                     f"run.overwrite=true to start afresh, or {elsewhere}")
