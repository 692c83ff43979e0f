"""Directory locks: one command at a time writes a directory; commands that only read it may share it.

    with directory_lock(run_dir, "run directory"):                  # collect, pretrain, ..., run
    with directory_lock(run_dir, "run directory", shared=True):     # evaluate: reads the run's outputs
        with directory_lock(evaluation_dir, "evaluation directory"):  # ... and writes its own

Two commands on one run directory both ran every stage and one crashed: now the second is refused at once,
naming the processes that hold the lock. Locks are `fcntl.flock`s on `DIR/.lock`, so they die with their
process (a killed command leaves none behind); each holder notes its command in `DIR/.lock.<pid>` while it
runs. Under torchrun only rank 0 takes them (the other ranks are the same command).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike, what: str, shared: bool = False, command: str | None = None):
    """Hold a lock on `directory` (made if missing) while the block runs: exclusive, or `shared` with other
    shared holders. A directory locked otherwise raises ValueError naming `what`, the directory and the
    commands holding it. `command` is what the note says (default: this process's command line)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / ".lock"
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{what} {str(directory)!r} is in use by {lock_holders(directory)}; wait for it to "
                             "finish, or use another directory") from None
        note = directory / f".lock.{os.getpid()}"
        note.write_text(command or " ".join(sys.argv))
        try:
            yield
        finally:
            note.unlink(missing_ok=True)
            with contextlib.suppress(BlockingIOError):  # the last holder removes the lock, still holding it, and
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the notes that killed holders left
                for stale in directory.glob(".lock.*"):
                    stale.unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)


def lock_holders(directory: Path) -> str:
    """The commands of the live processes that noted a lock on `directory`; notes of dead ones are removed."""
    holders = []
    for note in sorted(directory.glob(".lock.*")):
        pid = note.name.removeprefix(".lock.")
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            note.unlink(missing_ok=True)  # its process was killed
            continue
        except PermissionError:  # alive, another user's
            pass
        holders.append(f"pid {pid} ({note.read_text(errors='replace').strip()})")
    return "; ".join(holders) or "another process"
