"""Data-parallel training under `torchrun`: one process per device, gradients averaged by DDP.

    torchrun --standalone --nproc_per_node=4 -m agent.cli train run_dir=runs/reacher   # 4 GPUs
    torchrun --standalone --nproc_per_node=2 -m agent.cli train run_dir=runs/quick device=cpu

Without torchrun (no WORLD_SIZE in the environment) everything is a single process and nothing here
changes the training. With it, each process takes every `world_size`-th window of the same global
batch (so `predictor.train.batch_size` stays the global batch size and the result does not depend on
the number of processes, up to float rounding), and only rank 0 writes files and shows progress.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from world_model.device import resolve_device


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This process's share of a global batch: rows rank, rank + world_size, ..."""
        return rows[self.rank :: self.world_size]

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around `module` when several processes train, else `module`."""
        if not self.distributed:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def mean(self, value: float) -> float:
        """The mean of `value` over the processes (every process must call it)."""
        if not self.distributed:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.item() / self.world_size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def start(device_name: str) -> Processes:
    """Join the torchrun process group if there is one: NCCL on one GPU per process, else Gloo on CPUs."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes(0, 1, resolve_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world_size, device)
