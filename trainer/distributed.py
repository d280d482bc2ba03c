"""torchrun support: one process per device, gloo on CPU and nccl on CUDA; rank 0 writes and evaluates."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device_kind: str) -> World:
    """Join the process group torchrun describes in the environment (a no-op for a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return World(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_flag(world: World, flag: bool, device: torch.device) -> bool:
    """Rank 0's decision (e.g. stop early) on every rank."""
    if not world.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, 0)
    return bool(tensor.item())


def gather_to_main(world: World, value: object) -> list[object] | None:
    """Every rank's `value`, in rank order, on rank 0 (None on the others); [value] for a single process."""
    if not world.distributed:
        return [value]
    gathered = [None] * world.world_size if world.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def stop(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
