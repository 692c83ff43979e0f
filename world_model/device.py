"""The device a command runs on, and whether it computes bf16 natively: torch only, no transformers, so that
composing a config (the `${native_bf16:${device}}` resolver) stays cheap for every command, a refused one too."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto`/None -> cuda when available else cpu; `cpu`/`cuda` as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use auto or cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={str(device)!r} is invalid; expected auto, cpu, cuda or cuda:N") from None


def native_bf16(device: str | torch.device | None = "auto") -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16
    or AMX. There bf16 autocast runs the small ViTs and predictors 1.7-3x faster than fp32; a CPU without
    them (AVX2 only) emulates bf16, 6-9x slower than fp32 (`python -m benchmarks.encoder_speed`). The
    configs' default for every `autocast_bf16`/`bf16` key is this answer (`${native_bf16:${device}}`)."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(getattr(torch.cpu, probe, lambda: False)()
                   for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def bf16_autocast(device: str | torch.device, enabled: bool) -> AbstractContextManager:
    """bf16 autocast on `device` where `enabled` (the configs' `autocast_bf16`/`bf16` keys), else a context that
    changes nothing: the one way every model of the project runs in bf16."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16) if enabled else nullcontext()
