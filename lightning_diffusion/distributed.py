"""The few collective operations a sweep needs, on the process group Lightning already set up.

Lightning (Trainer or Fabric) creates the process group; this module only asks it who we are and
exchanges Python objects. Without a process group everything degrades to one process.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def rank() -> int:
    """This process's rank (0 without DDP)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every process (no-op without DDP)."""
    if world_size() > 1:
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
