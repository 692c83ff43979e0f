"""World model: the frozen V-JEPA encoder, its in-domain pretraining and probes, the latent cache and
the action-conditioned latent predictor. Imports stay light: heavy modules load on first use."""
from __future__ import annotations

import importlib.util
import sys
import warnings


def hide_broken_torchvision() -> None:
    """transformers imports torchvision wherever it is installed, and PyPI's torchvision beside a torch built
    elsewhere (the CPU wheel) fails to import ("operator torchvision::nms does not exist"). The encoder needs
    none of torchvision: one that fails to import is hidden from transformers, with a warning saying how to fix it."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # a broken install raises RuntimeError, not ImportError
        import torch

        for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
            del sys.modules[name]  # what the failed import left half made
        sys.modules["torchvision"] = None  # `import torchvision` now fails cleanly, and find_spec finds nothing
        warnings.warn(f"torchvision fails to import ({str(error).splitlines()[0]}); the agent runs without it. To use "
                      f"it, install the torchvision built for torch {torch.__version__} (or uninstall torchvision)",
                      stacklevel=2)


hide_broken_torchvision()


def load_encoder(source: str, **options):
    """`world_model.encoder.load_encoder`: a `FrozenEncoder` from a hub id, weights dir or pretrain dir."""
    from world_model.encoder import load_encoder as load

    return load(source, **options)
