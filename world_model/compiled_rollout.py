"""torch.compile for a world model's `rollout` (the latent predictor's and the pixel model's), for planning.

    compile_rollout(model)                 # model.rollout is compiled from now on; eager where Inductor cannot
    compile_rollout(model, fallback=False) # a failing compile raises (the test comparing compiled and eager asks)

A whole rollout of the candidates is one graph: the context frames' pass (the same for every candidate), the
caches repeated for the candidates, and the H steps, whose key/value caches grow by a block per step, traced
through. A plan's CEM iteration then makes one compiled call per chunk of envs instead of one eager context pass
and H compiled steps: the lean predictor's plan is bound by the cost per call, and this takes it to 0.76x of one
graph per step (docs/experiments.md section 42), after a one-off compile of ~30 s per shape on a CPU. Callers
keep one batch shape (agent/worlds.py pads the last chunk). Every model compiled in a process shares `rollout`'s
code, and torch.compile makes one graph per shape (batch, context frames, precision), so the calls raise its
recompile limit (8 graphs per code object, beyond which it runs eagerly without a word) to RECOMPILE_LIMIT, for
the duration of each call only. Nothing process-wide is changed (torch._dynamo's `suppress_errors` and limits
stay as they are).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

RECOMPILE_LIMIT = 64  # graphs of `rollout` per process: batch shapes x context lengths x precisions x models


def compile_rollout(model: nn.Module, fallback: bool = True) -> None:
    """Replace `model.rollout` by its compiled version; where the backend cannot compile (no C++ compiler, say),
    `fallback` warns once and the model runs eagerly from then on; without it the error is raised."""
    eager, compiled = model.rollout, torch.compile(model.rollout, dynamic=False)

    def rollout(*args, **kwargs):
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001  (any backend failure; a real bug fails again eagerly)
            if not fallback:
                raise
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                          "planning runs eagerly", RuntimeWarning, stacklevel=2)
            model.rollout = eager
            return eager(*args, **kwargs)

    model.rollout = rollout
