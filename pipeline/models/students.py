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
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..registry import Registry
from .blocks import DepthwiseSeparable, GhostBottleneck, InvertedResidualSE, ShuffleUnit, conv_bn

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
