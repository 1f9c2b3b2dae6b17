"""Optimisers and learning-rate schedules by name (``OPTIMIZERS``, ``SCHEDULES``); a stage's
``TrainConfig`` picks one of each: ``optimizer: adamw|adam|sgd``, ``schedule: cosine|constant``."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULES: Registry[Callable[..., torch.optim.lr_scheduler.LRScheduler]] = Registry("schedule")


def _groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights (1-d tensors)."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@OPTIMIZERS.register("adamw")
def adamw(params: Iterable[nn.Parameter], lr: float, weight_decay: float, momentum: float = 0.9) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay; none on biases and norm weights); ``momentum`` is beta1."""
    return torch.optim.AdamW(_groups(params, weight_decay), lr=lr, betas=(momentum, 0.999))


@OPTIMIZERS.register("adam")
def adam(params: Iterable[nn.Parameter], lr: float, weight_decay: float, momentum: float = 0.9) -> torch.optim.Adam:
    """Adam with L2 weight decay on every parameter (the tutorials' ``optim.Adam(model.parameters(), lr)``
    when ``weight_decay`` is 0); ``momentum`` is beta1."""
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, betas=(momentum, 0.999),
                            weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable[nn.Parameter], lr: float, weight_decay: float, momentum: float = 0.9) -> torch.optim.SGD:
    """SGD with Nesterov momentum when ``momentum`` > 0 (no weight decay on biases and norm weights)."""
    return torch.optim.SGD(_groups(params, weight_decay), lr=lr, momentum=momentum, nesterov=momentum > 0)


@SCHEDULES.register("cosine")
def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 0, stepped once per batch."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        p = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


@SCHEDULES.register("constant")
def constant_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then the configured learning rate, unchanged."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)


def optimization(tc: Any, params: Iterable[nn.Parameter], steps_per_epoch: int
                 ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimiser and schedule (stepped per batch) of one stage's ``TrainConfig`` ``tc``."""
    steps = min(steps_per_epoch, tc.max_steps_per_epoch or steps_per_epoch)
    opt = OPTIMIZERS.get(tc.optimizer)(params, tc.lr, tc.weight_decay, tc.momentum)
    return opt, SCHEDULES.get(tc.schedule)(opt, steps * tc.epochs, int(steps * tc.warmup_epochs))
