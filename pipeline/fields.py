"""The tensors that flow from teacher to cache to losses.

A field *kind* is one sort of network output a loss can read: ``logits``, the pooled ``feat``\\ ures, a
feature ``map`` (``FIELDS``: how to take it from timm's ``forward_intermediates`` interface, which the
students implement too, its storage type and its default adapter). A ``FieldSpec`` is one concrete output:
a kind plus where it is read (``layer`` for maps, ``feat_from`` for features) and how it is stored
(``dtype``); its ``name`` (``logits``, ``feat``, ``map@3``) keys it everywhere: in the cache's files, in a
teacher's outputs, in a loss term's inputs. Loss arguments are named by kind (``map_s``, ``map_t``); the loss
term binds them to specs, so two FitNet hints at two layers are two terms reading ``map@2`` and ``map@3``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Registry

Extractor = Callable[[nn.Module, Tensor, list[Tensor], "FieldSpec"], Tensor]

# how ``feat`` is read off the last map: timm's pre-logits embedding (pooled, plus any head layers before the
# classifier; the tutorial nets' flattened map), the global average pool, or the flattened map
FEAT_FROM: Registry[Callable[[nn.Module, Tensor], Tensor]] = Registry("feat_from")
FEAT_FROM.register("pre_logits")(lambda m, final: m.forward_head(final, pre_logits=True))
FEAT_FROM.register("pooled")(lambda m, final: final.mean((2, 3)) if final.ndim == 4 else final)
FEAT_FROM.register("flatten")(lambda m, final: final.flatten(1))


@dataclass(frozen=True)
class Field:
    """A field kind. ``extract(model, final, intermediates, spec)`` -> (B, ...) (``intermediates``: every
    stage's map, indexed by ``spec.layer``); ``dtype``: default storage type in the cache;
    ``needs_layer``: read from an intermediate map (the spec's ``layer``); ``adapter`` / ``adapter_bn``:
    the default ``ADAPTERS`` entry that maps the student's tensor to the teacher's size (None: sizes must
    agree). ``student.adapters`` overrides it per kind."""

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


_register(Field("logits", lambda m, final, inter, spec: m.forward_head(final), np.float32))
_register(Field("feat", lambda m, final, inter, spec: FEAT_FROM.get(spec.feat_from)(m, final), np.float16,
                adapter="linear"))
_register(Field("map", lambda m, final, inter, spec: inter[spec.layer], np.float16, needs_layer=True,
                adapter="conv1x1", adapter_bn=True))


def field(name: str) -> Field:
    """The field kind ``name`` (``logits``, ``feat``, ``map``)."""
    return FIELDS.get(name)  # type: ignore[return-value]


@dataclass(frozen=True)
class FieldSpec:
    """One network output: ``kind`` (a ``FIELDS`` name), ``layer`` (maps: the stage index, negative from the end),
    ``feat_from`` (features: a ``FEAT_FROM`` name), ``dtype`` (cache storage; None: the kind's own)."""

    kind: str
    layer: Optional[int] = None
    feat_from: str = "pre_logits"
    dtype: Optional[str] = None

    def __post_init__(self) -> None:
        f = field(self.kind)
        if f.needs_layer and self.layer is None:
            raise ValueError(f"field {self.kind!r} needs a layer")
        if not f.needs_layer:
            object.__setattr__(self, "layer", None)
        if self.kind != "feat":
            object.__setattr__(self, "feat_from", "pre_logits")

    @property
    def name(self) -> str:
        """Its key: ``logits``, ``feat`` (``feat@pooled`` for another ``feat_from``), ``map@<layer>``."""
        if self.layer is not None:
            return f"{self.kind}@{self.layer}"
        return self.kind if self.feat_from == "pre_logits" else f"{self.kind}@{self.feat_from}"

    @property
    def storage(self) -> np.dtype:
        """The cache's storage type of this output."""
        return np.dtype(self.dtype or field(self.kind).dtype)


LOGITS = FieldSpec("logits")

# per batch: labels (B,), the 0-based epoch index (a 0-d tensor), and for mixed views (cache.mix) the
# partner's labels (B,) (-1: none or unlabelled) and the image's own share lam (B,) (1.0: not mixed)
CONTEXT_ARGS = ("target", "epoch", "target_mix", "lam")
SIDES = ("s", "t")  # a loss argument ``<kind>_s`` reads the student, ``<kind>_t`` the teacher


def tensor_args() -> tuple[str, ...]:
    """Every tensor argument a loss may take: ``target``, ``epoch``, ... and ``<kind>_s`` / ``<kind>_t`` per kind."""
    return (*CONTEXT_ARGS, *(f"{n}_{side}" for n in FIELDS for side in SIDES))


def parse_arg(arg: str) -> Optional[tuple[str, str]]:
    """``"map_t"`` -> ``("map", "t")``; None for a context argument (``target``, ``epoch``, ...)."""
    kind, _, side = arg.rpartition("_")
    return (kind, side) if side in SIDES and kind in FIELDS else None


def forward_specs(model: nn.Module, x: Tensor, specs: Iterable[FieldSpec]) -> dict[str, Tensor]:
    """Run ``model`` (timm-style: ``forward_intermediates``, ``forward_features``, ``forward_head``) once on
    (B, 3, H, W) and return ``{spec.name: tensor}`` for the requested outputs (maps at any of its layers)."""
    specs = sorted(set(specs), key=lambda s: s.name)
    if any(s.layer is not None for s in specs):
        final, inter = model.forward_intermediates(x)  # every stage's map: spec.layer indexes them
    else:
        final, inter = model.forward_features(x), []
    return {s.name: field(s.kind).extract(model, final, inter, s) for s in specs}


@torch.no_grad()
def spec_dims(model: nn.Module, img_size: int, specs: Iterable[FieldSpec]) -> dict[str, int]:
    """Channel size (dim 1) of each output of ``model`` at ``img_size``, probed with one blank image in eval mode."""
    specs = list(specs)
    if not specs:
        return {}
    was = model.training
    model.eval()
    p = next(model.parameters())
    x = torch.zeros(1, 3, img_size, img_size, device=p.device)
    try:
        return {n: int(t.shape[1]) for n, t in forward_specs(model, x, specs).items()}
    finally:
        model.train(was)
