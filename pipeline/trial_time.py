"""A sweep trial's time budget: how many epochs a student gets so trials compare at equal training time.

A sweep over student shapes at a fixed epoch count favours the slow shapes: a wider network gets more compute
for the same epochs. With ``trial_seconds`` in the search space each trial's epoch count is set from the
student's own measured step time instead, before it trains, so the whole learning-rate schedule still runs::

    epochs = clamp(round(trial_seconds / (steps_per_epoch * step_s)), 1, max_epochs)

``step_s`` is one optimisation step (forward, cross-entropy, backward, AdamW) of the student alone on a random
batch of the trial's size; the distillation terms and the data path cost about the same for every shape, so
they cancel in the comparison. Measured on the machine that trains the trial, so it is only as steady as
that machine; the trial records what it measured and the training time it really took (``train_s``).
"""
from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable

import torch
from torch import nn


def step_seconds(model: nn.Module, batch_size: int, img_size: int, channels_last: bool = False,
                 warmup: int = 3, steps: int = 7, autocast: Callable[[], AbstractContextManager] = nullcontext) -> float:
    """Median seconds of one training step of ``model`` on a random ``(batch_size, 3, img_size, img_size)`` batch,
    on the model's device (synchronised on a GPU), the forward under ``autocast()``.

    The model's weights are restored afterwards (the optimiser steps on a copy of its state)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.randn(batch_size, 3, img_size, img_size, device=device).contiguous(memory_format=fmt)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    times = []
    try:
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for i in range(warmup + steps):
            sync()
            t0 = time.perf_counter()
            with autocast():
                loss = nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return sorted(times)[len(times) // 2]


def epochs_within(seconds: float, step_s: float, steps_per_epoch: int, max_epochs: int) -> int:
    """Epochs of ``steps_per_epoch`` steps of ``step_s`` seconds that fit ``seconds``, between 1 and ``max_epochs``."""
    if step_s <= 0 or steps_per_epoch <= 0:
        return max_epochs
    return max(1, min(max_epochs, round(seconds / (steps_per_epoch * step_s))))


def trial_epochs(cfg: Any, student: nn.Module, layout: Any, seconds: float) -> tuple[int, float, int]:
    """``(epochs, step_s, steps_per_epoch)``: the epochs of ``cfg``'s student stage that fit ``seconds``, from
    ``student``'s step time measured where and in the precision it trains (a GPU's step is not the CPU's).
    ``layout``: the opened data (``pipeline.data.open_data``); the unlabelled test images count when the cache
    holds them and a loss reads the teacher. The student is left on the CPU."""
    from .engine import device
    from .precision import resolve

    sc = cfg.student
    images = len(layout.train.labels)
    if cfg.cache.unlabeled and sc.reads_teacher():
        images += len(layout.split("test").files)
    steps = max(1, images // sc.batch_size)
    steps = min(steps, sc.max_steps_per_epoch or steps)
    dev = device()
    step_s = step_seconds(student.to(dev), sc.batch_size, sc.img_size, sc.channels_last,
                          autocast=resolve(sc.amp, dev, "student").autocast)
    student.to("cpu")
    return epochs_within(seconds, step_s, steps, sc.epochs), step_s, steps
