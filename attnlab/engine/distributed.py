"""torchrun/DDP plumbing: the process's rank, reductions, and gathering val predictions."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def uses_cuda(device: str) -> bool:
    """Whether a ``train.device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) means CUDA here."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else single process.

    ``device`` is the ``train.device`` setting: NCCL for CUDA, gloo otherwise. The first
    call decides; later calls return the same group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if uses_cuda(device) else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), in place."""
    if not info.enabled:
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def run_on_main(info: DistInfo, action: Callable[[], None]) -> None:
    """Run ``action`` on rank 0 and raise its ``AttnlabError`` on every rank, so no rank
    waits forever in a barrier for a rank 0 that stopped."""
    from ..errors import AttnlabError

    message = None
    if info.is_main:
        try:
            action()
        except AttnlabError as err:
            if not info.enabled:
                raise
            message = str(err)
    message = broadcast_object(message, info)
    if message is not None:
        raise AttnlabError(message)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
