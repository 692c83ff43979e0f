"""torch.compile for what a world computes on each call during planning: a whole rollout of the candidates and the
energy's terms on it, as one graph.

    compile_method(world, "chunk_terms")       # agent/worlds.py: the latent predictor's rollout and the energy terms
    compile_method(world, "chunk_distances")   # agent/pixel_world.py: the pixel model's rollout and frame distances
    compile_method(model, "rollout", fallback=False)  # a failing compile raises (as a test asks)

The graph holds the context frames' pass (the same for every candidate), the caches repeated for the candidates, the H
steps, whose key/value caches grow by a block per step, traced through, and the distances to the goal. A plan's CEM
iteration then makes one compiled call per chunk of envs: the lean predictor's plan is bound by the cost per call,
so one graph per rollout took it to 0.76x of one graph per step (docs/experiments.md section 42), and taking the
distances into the graph to 0.88x again (section 45), after a one-off compile of ~30-40 s per shape on a CPU.
Callers keep one batch shape (the worlds pad the last chunk). Every object compiled in a process shares its method's
code, and torch.compile makes one graph per shape (batch, context frames, precision), so the calls raise its
recompile limit (8 graphs per code object, beyond which it runs eagerly without a word) to RECOMPILE_LIMIT, for the
duration of each call only. Nothing process-wide is changed (torch._dynamo's `suppress_errors` and limits stay as they
are).

Inductor's C++ wrapper (`cpp_wrapper`) calls the graph's kernels from compiled code instead of a Python function:
a plan of the lean predictor makes ~60 small kernel calls per rollout, whose Python dispatch cost a tenth of its
time; the C++ wrapper also compiles faster from a cold cache (section 45).
"""
from __future__ import annotations

import warnings

import torch

RECOMPILE_LIMIT = 64  # graphs of a method per process: batch shapes x context lengths x precisions x worlds
INDUCTOR_OPTIONS = {"cpp_wrapper": True}  # the graph's kernels called from C++, not Python (module docstring)


def compile_method(owner: object, name: str, fallback: bool = True) -> None:
    """Replace `owner.<name>` (a method) by its compiled version; where the backend cannot compile (no C++ compiler,
    say), `fallback` warns once and the method runs eagerly from then on; without it the error is raised."""
    eager = getattr(owner, name)
    compiled = torch.compile(eager, dynamic=False, options=INDUCTOR_OPTIONS)

    def method(*args, **kwargs):
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001  (any backend failure; a real bug fails again eagerly)
            if not fallback:
                raise
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                          "planning runs eagerly", RuntimeWarning, stacklevel=2)
            setattr(owner, name, eager)
            return eager(*args, **kwargs)

    setattr(owner, name, method)
