"""The distillation module: student + criterion (with its trainable adapters), reading a frozen teacher."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..fields import FieldSpec, forward_specs
from ..losses.criterion import Criterion


class Distiller(nn.Module):
    """``forward(batch) -> {"loss", <term>...}``: the student's outputs on ``batch["image"]`` against the
    teacher's on the same view, both named by field spec; ``teacher`` (a ``teachers.TeacherOutputs``: the cache
    or an online teacher) answers ``outputs(batch)``.

    Only the student and the criterion's adapters train; the teacher is not a module of this one (DDP does not
    wrap it, the checkpoint does not hold it), frozen in eval mode, no grad, inference mode."""

    def __init__(self, student: nn.Module, criterion: Criterion, norm: nn.Module, teacher: Any):
        super().__init__()
        self.student, self.criterion, self.norm = student, criterion, norm
        self.teacher = teacher
        self.student_specs: list[FieldSpec] = sorted({s for t in criterion.terms for s in t.specs("s")},
                                                     key=lambda s: s.name)

    def logits(self, image: Tensor) -> Tensor:
        """(B, H, W, 3) uint8 -> student logits (B, C)."""
        return self.student(self.norm(image))

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        x = self.norm(batch["image"])
        student = forward_specs(self.student, x, self.student_specs)
        context = {"target": batch["target"], "epoch": batch.get("epoch", torch.zeros((), device=x.device)),
                   "target_mix": batch.get("target_mix", torch.full_like(batch["target"], -1)),
                   "lam": batch.get("lam", torch.ones(len(batch["target"]), device=x.device)).float()}
        return self.criterion(student, self.teacher.outputs(batch), context)
