"""Headless MuJoCo rendering setup. Must run before anything imports mujoco."""
from __future__ import annotations

import ctypes.util
import os


def configure_mujoco_gl() -> str:
    """Choose `MUJOCO_GL` (egl, else osmesa) unless the user set it; returns the value in force.

    A user's own `MUJOCO_GL` always wins. EGL is preferred (it works headless, also with software
    Mesa); osmesa needs the Debian package `libosmesa6`.
    """
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    backend = "egl" if ctypes.util.find_library("EGL") else "osmesa"
    os.environ["MUJOCO_GL"] = backend
    if backend == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    else:
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    return backend
