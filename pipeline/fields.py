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

Extractor = Callable[[nn.Module, Tensor, list[Tensor], Optional[str]], Tensor]

# how ``feat`` is read off the last map: timm's pre-logits embedding (pooled, plus any head layers before the
# classifier; the tutorial nets' flattened map), the global average pool, or the flattened map
FEAT_FROM: Registry[Callable[[nn.Module, Tensor], Tensor]] = Registry("feat_from")
FEAT_FROM.register("pre_logits")(lambda m, final: m.forward_head(final, pre_logits=True))
FEAT_FROM.register("pooled")(lambda m, final: final.mean((2, 3)) if final.ndim == 4 else final)
FEAT_FROM.register("flatten")(lambda m, final: final.flatten(1))


@dataclass(frozen=True)
class Field:
    """``extract(model, final, intermediates, option)`` -> (B, ...) (``option``: e.g. ``feat``'s ``FEAT_FROM`` name);
    ``dtype``: storage type in the cache;
    ``needs_layer``: read from the intermediate map at ``cache.feature_layer``; ``adapter`` / ``adapter_bn``:
    the default ``ADAPTERS`` entry that maps the student's tensor to the teacher's size (None: sizes must
    agree). ``student.adapters`` overrides it per field."""

    name: str
    extract: Extractor
    dtype: type
    needs_layer: bool = False
    adapter: Optional[str] = None
    adapter_bn: bool = False


class Adapter(nn.Module):
    """``forward(s, t) -> (s', t')``: the student's (B, c_s, ...) and teacher's (B, c_t, ...) tensors made
    comparable. Trained with the student, never part of the deployed model."""

    def forward(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


def _resize_like(y: Tensor, like: Tensor) -> Tensor:
    if y.ndim == 4 and y.shape[-2:] != like.shape[-2:]:
        return F.interpolate(y, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return y


class Projection(Adapter):
    """Linear (B, D_s) -> (B, D_t), or a k x k conv (B, c_s, h, w) -> (B, c_t, h, w) resized bilinearly to the
    teacher's grid (FitNet's regressor); with ``bn`` a BatchNorm follows (and the layer has no bias)."""

    def __init__(self, c_s: int, c_t: int, bn: bool = False, kernel: int = 0):
        super().__init__()
        if kernel:
            layers: list[nn.Module] = [nn.Conv2d(c_s, c_t, kernel, padding=kernel // 2, bias=not bn)]
            layers += [nn.BatchNorm2d(c_t)] if bn else []
        else:
            layers = [nn.Linear(c_s, c_t, bias=not bn)] + ([nn.BatchNorm1d(c_t)] if bn else [])
        self.proj = nn.Sequential(*layers)

    def forward(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return _resize_like(self.proj(s), t), t


class TeacherPool(Adapter):
    """No parameters: the teacher's channels are averaged in consecutive groups down to the student's size
    (the PyTorch tutorial's ``avg_pool1d(hidden, 2)`` for 2048 -> 1024); maps are resized to the teacher's grid."""

    def __init__(self, c_s: int, c_t: int, bn: bool = False):
        super().__init__()
        if c_t % c_s:
            raise ValueError(f"adapter 'pool' needs the teacher's size ({c_t}) to be a multiple of the student's ({c_s})")
        if bn:
            raise ValueError("adapter 'pool' has no layer to normalise: set bn: false")
        self.c_s = c_s

    def forward(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = t.unflatten(1, (self.c_s, -1)).mean(2)
        return _resize_like(s, t), t


class Identity(Adapter):
    """No parameters: the sizes must agree already."""

    def __init__(self, c_s: int, c_t: int, bn: bool = False):
        super().__init__()
        if c_s != c_t:
            raise ValueError(f"adapter 'identity' needs equal sizes, the student has {c_s} and the teacher {c_t}: "
                             "use linear, conv1x1, conv3x3 or pool")

    def forward(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return _resize_like(s, t), t


ADAPTERS: Registry[Callable[..., Adapter]] = Registry("adapter")
ADAPTERS.register("linear")(lambda c_s, c_t, bn=False: Projection(c_s, c_t, bn))
ADAPTERS.register("conv1x1")(lambda c_s, c_t, bn=False: Projection(c_s, c_t, bn, kernel=1))
ADAPTERS.register("conv3x3")(lambda c_s, c_t, bn=False: Projection(c_s, c_t, bn, kernel=3))
ADAPTERS.register("pool")(TeacherPool)
ADAPTERS.register("identity")(Identity)


FIELDS: Registry[Field] = Registry("field")  # type: ignore[type-var]


def _register(f: Field) -> None:
    FIELDS.register(f.name)(f)  # type: ignore[arg-type]


_register(Field("logits", lambda m, final, inter, opt: m.forward_head(final), np.float32))
_register(Field("feat", lambda m, final, inter, opt: FEAT_FROM.get(opt or "pre_logits")(m, final), np.float16,
                adapter="linear"))
_register(Field("map", lambda m, final, inter, opt: inter[0], np.float16, needs_layer=True, adapter="conv1x1",
                adapter_bn=True))


def field(name: str) -> Field:
    return FIELDS.get(name)  # type: ignore[return-value]


# per batch: labels (B,), the 0-based epoch index (a 0-d tensor), and for mixed views (cache.mix) the
# partner's labels (B,) (-1: none or unlabelled) and the image's own share lam (B,) (1.0: not mixed)
CONTEXT_ARGS = ("target", "epoch", "target_mix", "lam")


def tensor_args() -> tuple[str, ...]:
    """Every tensor argument a loss may take: ``target``, ``epoch`` and ``<field>_s`` / ``<field>_t`` per field."""
    return (*CONTEXT_ARGS, *(f"{n}_{side}" for n in FIELDS for side in ("s", "t")))


def fields_of(args: Iterable[str], side: str) -> set[str]:
    """Field names behind loss arguments: ``fields_of({"logits_s", "map_t"}, "t") == {"map"}``."""
    return {a[: -len(side) - 1] for a in args if a.endswith(f"_{side}") and a[: -len(side) - 1] in FIELDS}


def forward_fields(model: nn.Module, x: Tensor, names: Iterable[str], layer: Optional[int],
                   options: Optional[dict[str, str]] = None) -> dict[str, Tensor]:
    """Run ``model`` (timm-style: ``forward_intermediates``, ``forward_features``, ``forward_head``) once on
    (B, 3, H, W) and return ``{name: tensor}`` for the requested fields; ``options`` per field (``{"feat":
    "flatten"}``)."""
    options = options or {}
    names = sorted(set(names))
    if any(field(n).needs_layer for n in names):
        if layer is None:
            raise ValueError(f"fields {names} need a feature layer (cache.feature_layer)")
        final, inter = model.forward_intermediates(x, indices=[layer])
    else:
        final, inter = model.forward_features(x), []
    return {n: field(n).extract(model, final, inter, options.get(n)) for n in names}


@torch.no_grad()
def field_dims(model: nn.Module, img_size: int, names: Iterable[str], layer: Optional[int],
               options: Optional[dict[str, str]] = None) -> dict[str, int]:
    """Channel size (dim 1) of each field of ``model`` at ``img_size``, probed with one blank image in eval mode."""
    was = model.training
    model.eval()
    p = next(model.parameters())
    x = torch.zeros(1, 3, img_size, img_size, device=p.device)
    try:
        return {n: int(t.shape[1]) for n, t in forward_fields(model, x, names, layer, options).items()}
    finally:
        model.train(was)
