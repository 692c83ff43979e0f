"""Directory locks (bookkeeping/locks.py): exclusive against everything, shared with shared, named holders,
and nothing left behind by a released or killed holder."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bookkeeping.locks import directory_lock
from tests.conftest import REPO


def holder(directory, shared: bool) -> subprocess.Popen:
    """A process holding a lock on `directory` until it is killed."""
    script = ("import sys, time; from bookkeeping.locks import directory_lock\n"
              f"with directory_lock({str(directory)!r}, 'run directory', shared={shared}, command='holder cmd'):\n"
              "    print('held', flush=True); time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline().strip() == "held"
    return process


def test_shared_holders_admit_each_other_and_refuse_an_exclusive_one(tmp_path):
    process = holder(tmp_path, shared=True)
    try:
        with directory_lock(tmp_path, "run directory", shared=True):
            in_use = rf"^run directory '{tmp_path}' is in use by .*; wait for it"
            with pytest.raises(ValueError, match=in_use) as refused:
                with directory_lock(tmp_path, "run directory", command="second"):
                    pass
            assert f"pid {process.pid} (holder cmd)" in str(refused.value)
            assert f"pid {os.getpid()} (" in str(refused.value)  # this process's own shared lock, too
        assert (tmp_path / ".lock").exists()  # the other holder still holds it
    finally:
        process.kill()
        process.wait()
    with directory_lock(tmp_path, "run directory"):  # a killed holder's lock died with it
        assert (tmp_path / f".lock.{os.getpid()}").exists()
    assert not list(tmp_path.glob(".lock*"))  # the last holder leaves nothing behind


def test_an_exclusive_holder_refuses_a_shared_one(tmp_path):
    process = holder(tmp_path, shared=False)
    try:
        with pytest.raises(ValueError, match=rf"is in use by pid {process.pid} \(holder cmd\)"):
            with directory_lock(tmp_path, "run directory", shared=True):
                pass
    finally:
        process.kill()
        process.wait()
