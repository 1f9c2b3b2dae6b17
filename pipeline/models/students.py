"""The model zoo: small CNNs from depthwise-separable-style blocks (and, in ``tutorials``, the public
tutorials' nets), created by name as student or teacher.

Every student has timm's interface, so one extractor (``pipeline.fields``) serves teacher and student::

    logits = net(x)                                        # (B, 3, H, W) -> (B, num_classes)
    final, maps = net.forward_intermediates(x, indices=[i])  # last map, [(B, C_i, H_i, W_i)]
    emb = net.forward_head(final, pre_logits=True)         # (B, num_features)

Widths scale with ``width`` and block counts with ``depth``; the defaults stay under 60,000
parameters for 11 classes (``distil params`` prints the table).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..registry import Registry
from .blocks import DepthwiseSeparable, GhostBottleneck, InvertedResidualSE, ShapedBlock, ShuffleUnit, conv_bn, shaped_mid

STUDENTS: Registry[Callable[..., "StudentNet"]] = Registry("student")


def _round(c: float, div: int = 8) -> int:
    return max(div, int(c + div / 2) // div * div)


class Staged(nn.Module):
    """timm's feature interface over ``self.stages`` (an ``nn.ModuleList``), entered through ``enter(x)``."""

    stages: nn.ModuleList

    def enter(self, x: Tensor) -> Tensor:
        """What runs before the first stage (a stem); the input itself by default."""
        return x

    def forward_intermediates(self, x: Tensor, indices: Optional[Union[int, Sequence[int]]] = None,
                              intermediates_only: bool = False) -> Union[list[Tensor], tuple[Tensor, list[Tensor]]]:
        """timm's interface: (B, 3, H, W) -> (last stage map, [maps of the stages in ``indices``]).

        ``indices``: stage indices (negative counts from the end), or an int n for the last n stages,
        or None for all. With ``intermediates_only`` only the list is returned."""
        n = len(self.stages)
        if indices is None:
            want = list(range(n))
        elif isinstance(indices, int):
            want = list(range(n - indices, n))
        else:
            if any(not -n <= i < n for i in indices):
                raise IndexError(f"stage index out of range: {list(indices)} (this net has {n} stages)")
            want = [i % n for i in indices]
        out, y = [], self.enter(x)
        for i, st in enumerate(self.stages):
            y = st(y)
            if i in want:
                out.append(y)
        return out if intermediates_only else (y, out)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> last stage map (B, C, h, w)."""
        y = self.enter(x)
        for st in self.stages:
            y = st(y)
        return y


class StudentNet(Staged):
    """Stem (3x3 conv, stride 2) -> stages of ``block`` -> global pool -> dropout -> linear."""

    def __init__(self, block: Callable[..., nn.Module], num_classes: int, widths: Sequence[int],
                 depths: Sequence[int], strides: Sequence[int], stem: int = 16, drop: float = 0.1,
                 **block_kwargs: Any):
        super().__init__()
        self.stem = conv_bn(3, stem, 3, 2)
        stages, cin = [], stem
        for w, d, s in zip(widths, depths, strides):
            blocks = []
            for i in range(max(1, d)):
                blocks.append(block(cin, w, s if i == 0 else 1, **block_kwargs))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(widths)
        self.num_features = cin
        self.drop = nn.Dropout(drop)
        self.classifier = nn.Linear(cin, num_classes)

    def enter(self, x: Tensor) -> Tensor:
        return self.stem(x)

    def forward_head(self, f: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, h, w) -> pooled (B, C) if ``pre_logits`` else logits (B, num_classes)."""
        e = f.mean((2, 3))
        return e if pre_logits else self.classifier(self.drop(e))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _scaled(widths: Sequence[int], depths: Sequence[int], width: float, depth: float) -> tuple[list[int], list[int]]:
    return [_round(w * width) for w in widths], [max(1, math.ceil(d * depth)) for d in depths]


@STUDENTS.register("dwsep")
def dwsep(num_classes: int, width: float = 1.0, depth: float = 1.0, drop: float = 0.1) -> StudentNet:
    """MobileNetV1-style depthwise/pointwise stack (~56k params at width 1, 11 classes)."""
    w, d = _scaled([32, 64, 96, 120], [1, 2, 2, 2], width, depth)
    return StudentNet(DepthwiseSeparable, num_classes, w, d, [1, 2, 2, 2], stem=_round(16 * width), drop=drop)


@STUDENTS.register("mbv2_se")
def mbv2_se(num_classes: int, width: float = 1.0, depth: float = 1.0, drop: float = 0.1, expand: float = 2.0) -> StudentNet:
    """Inverted residuals with squeeze-excite (MobileNetV2/V3-style)."""
    w, d = _scaled([16, 24, 40, 56], [1, 2, 2, 2], width, depth)
    return StudentNet(InvertedResidualSE, num_classes, w, d, [1, 2, 2, 2], stem=_round(16 * width), drop=drop, expand=expand)


@STUDENTS.register("shuffle")
def shuffle(num_classes: int, width: float = 1.0, depth: float = 1.0, drop: float = 0.1, groups: int = 4) -> StudentNet:
    """Grouped pointwise convs + channel shuffle (ShuffleNetV1-style)."""
    w, d = _scaled([48, 96, 144, 224], [1, 2, 3, 2], width, depth)
    return StudentNet(ShuffleUnit, num_classes, w, d, [1, 2, 2, 2], stem=_round(16 * width), drop=drop, groups=groups)


@STUDENTS.register("ghost")
def ghost(num_classes: int, width: float = 1.0, depth: float = 1.0, drop: float = 0.1, expand: float = 2.0) -> StudentNet:
    """Ghost bottlenecks: half the channels come from cheap depthwise ops (GhostNet-style)."""
    w, d = _scaled([24, 40, 56, 80], [1, 2, 2, 2], width, depth)
    return StudentNet(GhostBottleneck, num_classes, w, d, [1, 2, 2, 2], stem=_round(16 * width), drop=drop, expand=expand)


@dataclass(frozen=True)
class Shape:
    """The ``shaped`` student's resolved shape: one entry per stage, after ``width``/``depth`` scaling."""

    channels: list[int]
    blocks: list[int]
    kernels: list[int]
    expand: list[float]
    se: list[bool]
    strides: list[int]
    stem: int
    head: int


def _per_stage(key: str, value: Any, n: int) -> list[Any]:
    vals = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(vals) != n:
        raise ValueError(f"student.kwargs.{key} has {len(vals)} entries, channels has {n}: give one per stage "
                         "(or one value for every stage)")
    return vals


def resolve_shape(channels: Sequence[int] = (24, 40, 64, 96), blocks: Union[int, Sequence[int]] = (1, 2, 2, 2),
                  kernels: Union[int, Sequence[int]] = 3, expand: Union[float, Sequence[float]] = 1.0,
                  se: Union[bool, Sequence[bool]] = False, strides: Optional[Union[int, Sequence[int]]] = None,
                  stem: int = 16, head: int = 0, width: float = 1.0, depth: float = 1.0) -> Shape:
    """Check and scale the ``shaped`` student's keyword arguments (``ValueError`` naming the key)."""
    n = len(channels)
    if n == 0:
        raise ValueError("student.kwargs.channels is empty: give one channel count per stage, e.g. [24, 40, 64, 96]")
    strides = [1] + [2] * (n - 1) if strides is None else strides
    per = {k: _per_stage(k, v, n) for k, v in
           {"blocks": blocks, "kernels": kernels, "expand": expand, "se": se, "strides": strides}.items()}
    if any(k < 1 or k % 2 == 0 for k in per["kernels"]):
        raise ValueError(f"student.kwargs.kernels must be odd and >= 1, got {per['kernels']}")
    if any(e <= 0 for e in per["expand"]) or any(s < 1 for s in per["strides"]) or min(channels) < 1:
        raise ValueError("student.kwargs: channels, expand and strides must be positive")
    w, d = _scaled(channels, per["blocks"], width, depth)
    return Shape(w, d, [int(k) for k in per["kernels"]], [float(e) for e in per["expand"]], [bool(s) for s in per["se"]],
                 [int(s) for s in per["strides"]], _round(stem * width), _round(head * width) if head else 0)


class ShapedNet(StudentNet):
    """Stem (3x3 conv, stride 2) -> per stage ``blocks`` x ``ShapedBlock(kernel, expand, se)`` -> optional 1x1
    head conv (in ``forward_head``) -> global pool -> dropout -> linear."""

    def __init__(self, num_classes: int, shape: Shape, drop: float = 0.1):
        Staged.__init__(self)
        self.stem = conv_bn(3, shape.stem, 3, 2)
        stages, cin = [], shape.stem
        for c, d, k, e, se, s in zip(shape.channels, shape.blocks, shape.kernels, shape.expand, shape.se, shape.strides):
            stages.append(nn.Sequential(*[ShapedBlock(cin if i == 0 else c, c, s if i == 0 else 1, k, e, se)
                                          for i in range(d)]))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(shape.channels)
        self.head = conv_bn(cin, shape.head, 1) if shape.head else nn.Identity()
        self.num_features = shape.head or cin
        self.drop = nn.Dropout(drop)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_head(self, f: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, h, w) -> pooled (B, num_features) if ``pre_logits`` else logits (B, num_classes)."""
        e = self.head(f).mean((2, 3))
        return e if pre_logits else self.classifier(self.drop(e))


def _conv_bn_params(cin: int, cout: int, k: int = 1, groups: int = 1) -> int:
    return cin // groups * cout * k * k + 2 * cout  # conv weight (no bias) + BatchNorm weight and bias


def shaped_params(num_classes: int, drop: float = 0.1, **kwargs: Any) -> int:
    """The ``shaped`` student's parameter count from its keyword arguments alone (nothing is built); every
    module runs once per forward, so the unique and the applied (torchsummary) counts are both this."""
    shape = resolve_shape(**kwargs)
    total, cin = _conv_bn_params(3, shape.stem, 3), shape.stem
    for c, d, k, e, se in zip(shape.channels, shape.blocks, shape.kernels, shape.expand, shape.se):
        for i in range(d):
            mid = shaped_mid(cin, e)
            if mid != cin:
                total += _conv_bn_params(cin, mid, 1)
            total += _conv_bn_params(mid, mid, k, groups=mid)
            if se:
                r = max(4, int(mid * 0.25))
                total += mid * r + r + r * mid + mid
            total += _conv_bn_params(mid, c, 1)
            cin = c
    if shape.head:
        total, cin = total + _conv_bn_params(cin, shape.head, 1), shape.head
    return total + cin * num_classes + num_classes


@STUDENTS.register("shaped", count=shaped_params)
def shaped(num_classes: int, channels: Sequence[int] = (24, 40, 64, 96), blocks: Union[int, Sequence[int]] = (1, 2, 2, 2),
           kernels: Union[int, Sequence[int]] = 3, expand: Union[float, Sequence[float]] = 1.0,
           se: Union[bool, Sequence[bool]] = False, strides: Optional[Union[int, Sequence[int]]] = None, stem: int = 16,
           head: int = 0, width: float = 1.0, depth: float = 1.0, drop: float = 0.1) -> ShapedNet:
    """A student whose shape is config: per stage ``channels``, ``blocks``, ``kernels``, ``expand`` (1 =
    depthwise-separable, >1 = inverted residual) and ``se`` (squeeze-excite on/off), plus ``strides`` (default 1, 2, 2, ...), ``stem``
    and ``head`` (a 1x1 conv before pooling; 0 = none); a single value applies to every stage. ``width`` and
    ``depth`` scale channels and blocks like the other students. Counted before it is built (``shaped_params``)."""
    shape = resolve_shape(channels, blocks, kernels, expand, se, strides, stem, head, width, depth)
    return ShapedNet(num_classes, shape, drop)


def predicted_params(name: str, num_classes: int, kwargs: dict[str, Any]) -> Optional[int]:
    """The parameter count of student ``name`` from its keyword arguments, without building it, for the
    families that register a ``count``; None for the others."""
    count = STUDENTS.meta(name).get("count")
    return None if count is None else int(count(num_classes, **{k: v for k, v in kwargs.items() if k != "img_size"}))


def register_shape(name: str, doc: str, width: float = 1.0, **shape: Any) -> None:
    """Register a fixed ``shaped`` student (a sweep's best shape) as ``name``: its ``shape`` (``channels``,
    ``blocks``, ``kernels``, ``expand``, ``se``, ``stem``, ``head``) is the family's, ``width`` (its default
    fills the budget), ``depth`` and ``drop`` stay keys, and it is counted from its kwargs before it is built."""
    resolve_shape(**shape)  # a bad shape fails at import, naming the key

    def build(num_classes: int, width: float = width, depth: float = 1.0, drop: float = 0.1) -> ShapedNet:
        return shaped(num_classes, **shape, width=width, depth=depth, drop=drop)

    def count(num_classes: int, width: float = width, depth: float = 1.0, drop: float = 0.1) -> int:
        return shaped_params(num_classes, drop, **shape, width=width, depth=depth)

    build.__doc__ = doc
    STUDENTS.register(name, count=count, shape=dict(shape))(build)


# The best shape of `configs/sweeps/food10-mini-shaped.yaml` (trial 5 of 12, 300 s of training each, width fitted to
# the 60k budget): one block per stage, a wide last stage with squeeze-excite, a 1x1 head of 192. Against dwsep and
# ghost at equal time: benchmarks/results/shapes.md. A short-budget shape: over 60 epochs dwsep is 4 points ahead
# (benchmarks/results/epochs.md, epochs_dwsep.md).
register_shape("shallow_se", "One depthwise-separable block per stage (24/48/64/144 x width 1.1, stem 24), squeeze-excite "
               "in the last, 1x1 head 192: the food10-mini shaped sweep's best (59,405 params for 11 classes).",
               width=1.1, channels=[24, 48, 64, 144], blocks=[1, 1, 1, 1], kernels=[3, 3, 3, 3],
               expand=[1.0, 1.0, 1.0, 1.0], se=[False, False, False, True], stem=24, head=192)


def widest(name: str, num_classes: int, kwargs: dict[str, Any], budget: int,
           img_size: Optional[int] = None) -> Optional[tuple[float, int]]:
    """The largest ``width`` of student ``name`` (its other ``kwargs`` kept) whose parameter count fits ``budget``,
    and that count: from the family's analytic count when it registers one (nothing built), else counted on built
    models. None when no width from 0.05 fits; ``ValueError`` when the student has no ``width``."""
    from .budget import largest_width

    if "width" not in inspect.signature(STUDENTS.get(name)).parameters:
        raise ValueError(f"student {name!r} has no width keyword to fit the budget with")
    rest = {k: v for k, v in kwargs.items() if k != "width"}
    count = STUDENTS.meta(name).get("count")
    return largest_width(lambda w: create_student(name, num_classes, img_size, width=w, **rest), budget, img_size or 32,
                         count=None if count is None else (lambda w: int(count(num_classes, width=w, **rest))))


def create_student(name: str, num_classes: int, img_size: Optional[int] = None, **kwargs: Any) -> nn.Module:
    """Build a registered model by name; unknown names and keyword arguments fail clearly. A model whose
    builder takes ``img_size`` (its linear layer reads a flattened map) gets the stage's ``img_size``
    unless ``kwargs`` sets it."""
    fn = STUDENTS.get(name)
    if img_size is not None and "img_size" in inspect.signature(fn).parameters:
        kwargs = {"img_size": img_size, **kwargs}
    try:
        return fn(num_classes, **kwargs)
    except TypeError as exc:
        params = [p for p in inspect.signature(fn).parameters if p != "num_classes"]
        raise TypeError(f"student {name!r}: {exc}; valid student.kwargs: {', '.join(params)}") from None


def check_student_kwargs(name: str, kwargs: dict[str, Any], img_size: Optional[int] = None) -> None:
    """Raise ``ValueError`` (at config load) for an unknown student or keyword, or one that does not build
    (on the meta device: no memory, no compute)."""
    try:
        with torch.device("meta"):
            create_student(name, 10, img_size, **kwargs)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError) as exc:
        raise ValueError(f"student {name!r} with kwargs {kwargs}: {exc}") from None
