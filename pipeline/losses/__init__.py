"""Distillation losses: pure tensor functions, registered by name in ``LOSSES``.

A loss takes keyword-only tensors and keyword hyper-parameters and returns a scalar. The tensor
names it accepts say what it needs (the criterion and the cache read them off the signature):

========== ===================== ==============================================
name       shape                 meaning
========== ===================== ==============================================
logits_s   (B, C)                student logits
logits_t   (B, C)                teacher logits
target     (B,) int64            labels (-1: unlabelled image, skipped by CE)
feat_s     (B, D)                student embedding (projected to D when the loss
                                 is registered with ``project="feat"``)
feat_t     (B, D)                teacher pooled features
map_s      (B, c, h, w)          student feature map (projected with ``project="map"``)
map_t      (B, c', h', w')       teacher feature map (timm ``forward_intermediates``)
========== ===================== ==============================================

A new loss is one decorated function in ``logits.py`` or ``features.py``; the tests iterate the registry.
"""
from __future__ import annotations

import inspect
from typing import Callable

from torch import Tensor

from ..registry import Registry

LOSSES: Registry[Callable[..., Tensor]] = Registry("loss")
TENSOR_ARGS = ("logits_s", "logits_t", "target", "feat_s", "feat_t", "map_s", "map_t")


def loss_inputs(name: str) -> set[str]:
    """Tensor arguments the loss ``name`` takes, e.g. ``{"logits_s", "logits_t"}``."""
    return {p for p in inspect.signature(LOSSES.get(name)).parameters if p in TENSOR_ARGS}


def loss_hparams(name: str) -> dict[str, object]:
    """Hyper-parameters of loss ``name`` with their defaults."""
    sig = inspect.signature(LOSSES.get(name))
    return {k: p.default for k, p in sig.parameters.items() if k not in TENSOR_ARGS}


from . import features, logits  # noqa: E402,F401  (fill the registry)

__all__ = ["LOSSES", "TENSOR_ARGS", "loss_inputs", "loss_hparams"]
