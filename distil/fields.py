"""The tensors that flow from teacher to cache to losses, in one table.

A field is one output of a network (teacher or student) that a loss can read: ``logits``, the
pooled ``feat``\\ ures, a feature ``map``. Each entry says how to take it from the outputs of
timm's ``forward_intermediates`` interface (which the students implement too), how the cache stores
it, and which trainable adapter maps the student's version to the teacher's size. Losses name the
student's and teacher's tensors ``<field>_s`` and ``<field>_t``; the cache stage, the teachers and the
distiller all loop over this table, so a new field (a second hint layer, a mixed view's logits) is
one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Registry

Extractor = Callable[[nn.Module, Tensor, list[Tensor]], Tensor]
AdapterFactory = Callable[[int, int], nn.Module]


@dataclass(frozen=True)
class Field:
    """``extract(model, final, intermediates)`` -> (B, ...); ``dtype``: storage type in the cache;
    ``needs_layer``: read from the intermediate map at ``cache.feature_layer``; ``adapter(c_s, c_t)``:
    the trainable map from the student's channel size to the teacher's (None: sizes must agree)."""

    name: str
    extract: Extractor
    dtype: type
    needs_layer: bool = False
    adapter: Optional[AdapterFactory] = None


class MapRegressor(nn.Module):
    """FitNet-style regressor: 1x1 conv + BN from the student's channels to the teacher's, then a
    bilinear resize to the teacher's grid. (B, c_s, h, w) -> (B, c_t, H, W)."""

    def __init__(self, c_s: int, c_t: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t))

    def forward(self, x: Tensor, like: Tensor) -> Tensor:
        y = self.proj(x)
        return y if y.shape[-2:] == like.shape[-2:] else F.interpolate(y, size=like.shape[-2:], mode="bilinear",
                                                                      align_corners=False)


class Projection(nn.Module):
    """Linear projection of a (B, D_s) embedding to (B, D_t)."""

    def __init__(self, d_s: int, d_t: int):
        super().__init__()
        self.proj = nn.Linear(d_s, d_t)

    def forward(self, x: Tensor, like: Tensor) -> Tensor:
        return self.proj(x)


FIELDS: Registry[Field] = Registry("field")  # type: ignore[type-var]


def _register(f: Field) -> None:
    FIELDS.register(f.name)(f)  # type: ignore[arg-type]


_register(Field("logits", lambda m, final, inter: m.forward_head(final), np.float32))
_register(Field("feat", lambda m, final, inter: m.forward_head(final, pre_logits=True), np.float16,
                adapter=Projection))
_register(Field("map", lambda m, final, inter: inter[0], np.float16, needs_layer=True, adapter=MapRegressor))


def field(name: str) -> Field:
    return FIELDS.get(name)  # type: ignore[return-value]


CONTEXT_ARGS = ("target", "epoch")  # per batch: labels (B,) and the 0-based epoch index (a 0-d tensor)


def tensor_args() -> tuple[str, ...]:
    """Every tensor argument a loss may take: ``target``, ``epoch`` and ``<field>_s`` / ``<field>_t`` per field."""
    return (*CONTEXT_ARGS, *(f"{n}_{side}" for n in FIELDS for side in ("s", "t")))


def fields_of(args: Iterable[str], side: str) -> set[str]:
    """Field names behind loss arguments: ``fields_of({"logits_s", "map_t"}, "t") == {"map"}``."""
    return {a[: -len(side) - 1] for a in args if a.endswith(f"_{side}") and a[: -len(side) - 1] in FIELDS}


def forward_fields(model: nn.Module, x: Tensor, names: Iterable[str], layer: Optional[int]) -> dict[str, Tensor]:
    """Run ``model`` (timm-style: ``forward_intermediates``, ``forward_features``, ``forward_head``) once on
    (B, 3, H, W) and return ``{name: tensor}`` for the requested fields."""
    names = sorted(set(names))
    if any(field(n).needs_layer for n in names):
        if layer is None:
            raise ValueError(f"fields {names} need a feature layer (cache.feature_layer)")
        final, inter = model.forward_intermediates(x, indices=[layer])
    else:
        final, inter = model.forward_features(x), []
    return {n: field(n).extract(model, final, inter) for n in names}


@torch.no_grad()
def field_dims(model: nn.Module, img_size: int, names: Iterable[str], layer: Optional[int]) -> dict[str, int]:
    """Channel size (dim 1) of each field of ``model`` at ``img_size``, probed with one blank image in eval mode."""
    was = model.training
    model.eval()
    p = next(model.parameters())
    x = torch.zeros(1, 3, img_size, img_size, device=p.device)
    try:
        return {n: int(t.shape[1]) for n, t in forward_fields(model, x, names, layer).items()}
    finally:
        model.train(was)
