"""The architectures of the public tutorials this product grew from, by name, as teacher or student.

========================= ========================================================== ===========
name                      source                                                     params
========================= ========================================================== ===========
``tutorial_deepnn``       PyTorch KD tutorial (CIFAR-10) teacher ``DeepNN``          1,186,986
``tutorial_lightnn``      PyTorch KD tutorial (CIFAR-10) student ``LightNN``         267,738
``mnist_teacher``         KD notes on MNIST: 2 convs + 1024-unit MLP                 6,508,298
``mnist_student``         KD notes on MNIST: one 7x7/stride-7 conv + linear 16 -> 10 220
``xray_student``          chest X-ray KD: conv 3->4 + BN + ReLU + maxpool -> linear  ~100k
========================= ========================================================== ===========

(params for 10 classes, 32 px for the CIFAR nets, 28 px for MNIST, 224 px and 2 classes for the X-ray
student; the linear layers' inputs depend on the image size, which must be the tutorial's.)

Each net has timm's interface, like the student zoo, so the fields (logits, ``feat``, ``map``) and
hooks work unchanged: ``forward_intermediates`` returns the outputs of its conv ``stages`` (the last
one is the map the classifier flattens), ``forward_head(map, pre_logits=True)`` is that flattened map
(the "hidden state" of the tutorial's cosine variant). ``in_chans=1`` nets read the first channel of
the (greyscale, replicated) RGB input.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .students import STUDENTS, Staged


class TutorialNet(Staged):
    """``stages`` (conv blocks) -> flatten -> ``classifier``; ``in_chans`` input channels are taken from the
    3-channel input."""

    def __init__(self, stages: Sequence[nn.Module], classifier: nn.Module, in_chans: int = 3):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.classifier = classifier
        self.in_chans = in_chans

    def enter(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> the ``in_chans`` channels the first conv reads."""
        return x[:, : self.in_chans] if x.shape[1] != self.in_chans else x

    def forward_head(self, f: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, c, h, w) -> flattened (B, c*h*w) if ``pre_logits`` else logits (B, num_classes)."""
        e = f.flatten(1)
        return e if pre_logits else self.classifier(e)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, pad), nn.ReLU()]


@STUDENTS.register("tutorial_deepnn", tutorial=True)
def tutorial_deepnn(num_classes: int, img_size: int = 32, drop: float = 0.1) -> TutorialNet:
    """PyTorch KD tutorial teacher: conv 3->128, 128->64, maxpool, 64->64, 64->32, maxpool (3x3, pad 1,
    ReLU) -> flatten (32 * (img_size/4)**2 = 2048) -> linear 512 -> ReLU -> dropout -> linear."""
    side = img_size // 4
    return TutorialNet(
        [nn.Sequential(*_conv(3, 128), *_conv(128, 64), nn.MaxPool2d(2, 2)),
         nn.Sequential(*_conv(64, 64), *_conv(64, 32), nn.MaxPool2d(2, 2))],
        nn.Sequential(nn.Linear(32 * side * side, 512), nn.ReLU(), nn.Dropout(drop), nn.Linear(512, num_classes)))


@STUDENTS.register("tutorial_lightnn", tutorial=True)
def tutorial_lightnn(num_classes: int, img_size: int = 32, drop: float = 0.1) -> TutorialNet:
    """PyTorch KD tutorial student: conv 3->16, maxpool, 16->16, maxpool -> flatten (16 * (img_size/4)**2
    = 1024) -> linear 256 -> ReLU -> dropout -> linear."""
    side = img_size // 4
    return TutorialNet(
        [nn.Sequential(*_conv(3, 16), nn.MaxPool2d(2, 2)), nn.Sequential(*_conv(16, 16), nn.MaxPool2d(2, 2))],
        nn.Sequential(nn.Linear(16 * side * side, 256), nn.ReLU(), nn.Dropout(drop), nn.Linear(256, num_classes)))


@STUDENTS.register("mnist_teacher", tutorial=True)
def mnist_teacher(num_classes: int, img_size: int = 28, drop: float = 0.5, in_chans: int = 1) -> TutorialNet:
    """KD notes' MNIST teacher: conv 1->64 (3x3, pad 1), ReLU, maxpool, conv 64->128, ReLU, maxpool ->
    flatten (128 * 7 * 7 = 6272) -> linear 1024 -> ReLU -> dropout -> linear."""
    side = img_size // 4
    return TutorialNet(
        [nn.Sequential(*_conv(in_chans, 64), nn.MaxPool2d(2)), nn.Sequential(*_conv(64, 128), nn.MaxPool2d(2))],
        nn.Sequential(nn.Linear(128 * side * side, 1024), nn.ReLU(), nn.Dropout(drop), nn.Linear(1024, num_classes)),
        in_chans)


@STUDENTS.register("mnist_student", tutorial=True)
def mnist_student(num_classes: int, img_size: int = 28, drop: float = 0.0, in_chans: int = 1) -> TutorialNet:
    """KD notes' MNIST student: conv 1->1 (7x7, stride 7), ReLU -> flatten (16) -> linear 16 -> classes."""
    side = img_size // 7
    return TutorialNet([nn.Sequential(*_conv(in_chans, 1, 7, 7, 0))],
                       nn.Sequential(nn.Dropout(drop), nn.Linear(side * side, num_classes)), in_chans)


@STUDENTS.register("xray_student", tutorial=True)
def xray_student(num_classes: int, img_size: int = 224, drop: float = 0.0) -> TutorialNet:
    """Chest X-ray KD student: conv 3->4 (3x3, pad 1) + BN + ReLU + maxpool 2 -> flatten (4 * 112 * 112 at
    224 px) -> linear -> classes."""
    side = img_size // 2
    return TutorialNet([nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))],
                       nn.Sequential(nn.Dropout(drop), nn.Linear(4 * side * side, num_classes)))
