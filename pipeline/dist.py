"""Data-parallel runs on 1..N processes (``accelerate launch`` or ``torchrun``, gloo on CPU, NCCL on GPU).

The launcher sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; with none set everything here is a no-op.
Each rank trains on its shard of every epoch's permutation; gradients are averaged across ranks
after ``backward`` (what DDP does), metrics are reduced, and only rank 0 writes files.
"""
from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group when launched with WORLD_SIZE > 1 (idempotent)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce and average ``.grad`` of ``params`` across ranks (one flat buffer)."""
    if world() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if world() == 1:
        return
    for b in module.buffers():
        dist.broadcast(b, src=0)


def mean_scalar(x: float) -> float:
    """The mean of a Python float over ranks."""
    if world() == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item() / world())


def broadcast_object(obj: object) -> object:
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
