"""The distillation module: student + loss adapters + criterion (+ a frozen online teacher)."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..fields import fields_of, forward_fields
from ..losses.criterion import Criterion


class Distiller(nn.Module):
    """``forward(batch) -> {"loss", <term>...}``: the student's fields on ``batch["image"]`` against the
    teacher's on the same view, either computed by ``teacher`` (an ``OnlineTeacher``, frozen, from
    ``batch["teacher_image"]``) or read from the batch (``<field>_t``, cached).

    ``student_layer``: the student stage whose map feeds map losses. Only the student and the
    criterion's adapters train; the teacher is frozen (eval, no grad, inference mode)."""

    def __init__(self, student: nn.Module, criterion: Criterion, norm: nn.Module, student_layer: Optional[int],
                 teacher: Optional[nn.Module] = None, options: Optional[dict[str, str]] = None):
        super().__init__()
        self.student, self.criterion, self.norm, self.teacher = student, criterion, norm, teacher
        self.student_layer = student_layer
        self.options = dict(options or {})  # per field, e.g. {"feat": "flatten"} (student.feat_from)
        self.student_fields = fields_of(criterion.needs, "s")
        self.teacher_args = sorted(a for a in criterion.needs if a.endswith("_t"))

    def logits(self, image: Tensor) -> Tensor:
        """(B, H, W, 3) uint8 -> student logits (B, C)."""
        return self.student(self.norm(image))

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        x = self.norm(batch["image"])
        out = forward_fields(self.student, x, self.student_fields, self.student_layer, self.options)
        tensors: dict[str, Tensor] = {f"{k}_s": v for k, v in out.items()}
        tensors["target"] = batch["target"]
        tensors["epoch"] = batch.get("epoch", torch.zeros((), device=x.device))
        tensors["target_mix"] = batch.get("target_mix", torch.full_like(batch["target"], -1))
        tensors["lam"] = batch.get("lam", torch.ones(len(batch["target"]), device=x.device)).float()
        if self.teacher_args:
            got = self.teacher(batch["teacher_image"]) if self.teacher is not None else batch
            tensors.update({a: got[a].float() for a in self.teacher_args})
        return self.criterion(**tensors)

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: BatchNorm statistics and dropout stay in eval mode
        return self
