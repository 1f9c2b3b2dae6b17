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
    criterion's adapters train; the teacher is frozen (eval, no grad, inference mode) and stands beside
    the module, as in timm's distillation task: it is no submodule, so DDP, the EMA, ``state_dict()``
    (``last.pt``, the best state) see only what trains, while ``.to()`` moves it along."""

    def __init__(self, student: nn.Module, criterion: Criterion, norm: nn.Module, student_layer: Optional[int],
                 teacher: Optional[nn.Module] = None, options: Optional[dict[str, str]] = None):
        super().__init__()
        self.student, self.criterion, self.norm = student, criterion, norm
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # beside, not registered (nn.Module.__setattr__ would)
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

    def _apply(self, fn: Any, recurse: bool = True) -> "Distiller":
        """``.to(device / dtype / memory_format)`` and friends move the teacher beside the module too."""
        super()._apply(fn, recurse)
        if self.teacher is not None:
            self.teacher._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: BatchNorm statistics and dropout stay in eval mode
        return self
