"""Data-parallel runs on 1..N processes with torch's ``DistributedDataParallel``.

Launch with ``torchrun`` or ``accelerate launch`` (they set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``):
gloo on CPU, NCCL on GPU. With no launcher everything here is a no-op and modules are not wrapped.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init() -> None:
    """Join the process group when launched with WORLD_SIZE > 1 (idempotent)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def wrap(module: nn.Module, sync_bn: bool = False, find_unused: bool = False) -> nn.Module:
    """``module`` in DDP when there are several processes (bucketed all-reduce overlapping backward); the module
    itself otherwise. Buffers are not broadcast from rank 0 each forward: every rank's BatchNorm statistics follow
    its own shard and ``average_running_stats`` averages them (before validation and checkpoints).
    ``find_unused``: some trainable parameter gets no gradient from the loss (``unreached``); DDP then searches
    the graph after every forward, which costs, so only then."""
    if world() == 1:
        return module
    if sync_bn:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [local_rank()] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                               find_unused_parameters=find_unused)


def unreached(loss: torch.Tensor, module: nn.Module) -> list[str]:
    """Names of ``module``'s trainable parameters that ``loss``'s autograd graph does not reach (they would get no
    gradient): the graph is walked from ``loss.grad_fn`` to its leaves, nothing is computed."""
    seen, reached, stack = set(), set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):  # AccumulateGrad: a leaf tensor
            reached.add(id(fn.variable))
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in reached]


RUNNING_STATS = ("running_mean", "running_var")  # BatchNorm's buffers (timm's distribute_bn matches the same names)


def running_stats(named: Iterable[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
    """The BatchNorm running statistics among ``named`` (``module.named_buffers()`` or a state dict's items)."""
    return [t for n, t in named if n.rsplit(".", 1)[-1] in RUNNING_STATS]


def average_(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor by its mean over ranks, in place, in one all-reduce (float64)."""
    if world() == 1 or not tensors:
        return
    with torch.no_grad():
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        dist.all_reduce(flat)
        flat /= world()
        for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(part.view_as(t))


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if world() == 1:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64)
    if torch.cuda.is_available():
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def all_true(flag: bool) -> bool:
    """True when ``flag`` holds on every rank (e.g. every rank's loss is finite)."""
    return all_sum([0.0 if flag else 1.0])[0] == 0.0


def broadcast_object(obj: object) -> object:
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class ShardSampler(torch.utils.data.Sampler):
    """Rank ``r`` of ``w`` takes indices ``r, r + w, ...`` in order, without padding: every index is
    seen exactly once across ranks (sharded validation and caching)."""

    def __init__(self, n: int):
        self.n, self.rank, self.world = n, rank(), world()

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))
