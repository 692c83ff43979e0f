"""Crash-safe file writing: write to a temporary name in the same directory, fsync, then rename.

A reader (or a rerun after SIGKILL) sees either the old file or the complete new one, never half.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
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


def atomic_replace_dir(temp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> Path:
    """Move a fully written directory into place; an existing `final_dir` is replaced."""
    temp_dir, final_dir = Path(temp_dir), Path(final_dir)
    if final_dir.exists():
        trash = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final_dir, trash)
        os.replace(temp_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(temp_dir, final_dir)
    return final_dir


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
