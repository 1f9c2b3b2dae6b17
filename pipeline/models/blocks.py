"""Building blocks of the student zoo. Every block maps (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DepthwiseSeparable(nn.Module):
    """MobileNetV1: depthwise 3x3 (per channel) then pointwise 1x1 (mixes channels)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.dw = conv_bn(cin, cin, 3, stride, groups=cin)
        self.pw = conv_bn(cin, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.residual else y


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, ratio: float = 0.25):
        super().__init__()
        r = max(4, int(c * ratio))
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, r, 1), nn.ReLU(inplace=True), nn.Conv2d(r, c, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x)


class InvertedResidualSE(nn.Module):
    """MobileNetV2/V3: expand 1x1, depthwise 3x3, squeeze-excite, project 1x1 (linear), residual."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: float = 3.0, se: float = 0.25):
        super().__init__()
        mid = max(8, int(round(cin * expand)))
        self.body = nn.Sequential(
            conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride, groups=mid),
            SqueezeExcite(mid, se) if se > 0 else nn.Identity(), conv_bn(mid, cout, 1, act=False),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """(B, g*c, H, W) -> interleave the g groups so the next group conv sees every group."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV1: grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1, residual."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 4):
        super().__init__()
        g_in = groups if cin % groups == 0 else 1
        mid = max(groups, (cout // 2) // groups * groups)
        self.groups = g_in
        self.reduce = conv_bn(cin, mid, 1, groups=g_in)
        self.dw = conv_bn(mid, mid, 3, stride, groups=mid, act=False)
        self.expand = conv_bn(mid, cout, 1, groups=groups if cout % groups == 0 else 1, act=False)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.reduce(x)
        if self.groups > 1:
            y = channel_shuffle(y, self.groups)
        y = self.expand(self.dw(y))
        return self.act(x + y if self.residual else y)


class GhostModule(nn.Module):
    """GhostNet: a 1x1 conv makes half the channels, a cheap depthwise 3x3 makes the other half."""

    def __init__(self, cin: int, cout: int, act: bool = True):
        super().__init__()
        init = (cout + 1) // 2
        self.primary = conv_bn(cin, init, 1, act=act)
        self.cheap = conv_bn(init, init, 3, groups=init, act=act)
        self.cout = cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], 1)[:, : self.cout]


class GhostBottleneck(nn.Module):
    """Ghost module (expand), optional strided depthwise, Ghost module (project), shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: float = 2.0):
        super().__init__()
        mid = max(8, int(round(cin * expand)))
        self.ghost1 = GhostModule(cin, mid)
        self.dw = conv_bn(mid, mid, 3, stride, groups=mid, act=False) if stride > 1 else nn.Identity()
        self.ghost2 = GhostModule(mid, cout, act=False)
        if stride == 1 and cin == cout:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=False), conv_bn(cin, cout, 1, act=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.ghost2(self.dw(self.ghost1(x))) + self.shortcut(x)


class ShapedBlock(nn.Module):
    """One block of the ``shaped`` student: with ``expand == 1`` a depthwise-separable block (depthwise kxk,
    optional squeeze-excite, pointwise 1x1), otherwise an inverted residual (expand 1x1, depthwise kxk,
    optional squeeze-excite, linear project 1x1). Residual when stride 1 and cin == cout.
    (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, kernel: int = 3, expand: float = 1.0, se: bool = False):
        super().__init__()
        mid = shaped_mid(cin, expand)
        layers: list[nn.Module] = [conv_bn(cin, mid, 1)] if mid != cin else []
        layers.append(conv_bn(mid, mid, kernel, stride, groups=mid))
        if se:
            layers.append(SqueezeExcite(mid))
        layers.append(conv_bn(mid, cout, 1, act=mid == cin))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def shaped_mid(cin: int, expand: float) -> int:
    """The hidden width of a ``ShapedBlock``: ``cin`` when ``expand`` is 1, else ``round(cin * expand)`` (>= 8)."""
    return cin if expand == 1 else max(8, int(round(cin * expand)))
