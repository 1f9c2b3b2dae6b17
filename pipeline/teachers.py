"""Where a student's teacher tensors come from: the cache (``CachedTeacher``) or a frozen model run
on the same view (``OnlineTeacher``). Both give ``{"<field>_t": (B, ...)}`` for the fields the losses read."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .data.datasets import Normalize
from .fields import field_dims, forward_fields
from .models.artifacts import load_teacher
from .teacher_cache import TeacherCache, load_cache


class CachedTeacher:
    """The teacher's recorded outputs: ``lookup(index, view)`` runs in the data loader's workers."""

    def __init__(self, folder: Path, key: dict[str, Any], need: dict[str, Any], rebuild_cmd: str):
        self.cache: TeacherCache = load_cache(folder, key, need, rebuild_cmd)
        self.fields = list(need["stored"])
        self.views = self.cache.views
        self.mixes = self.cache.mixes
        self.dims: dict[str, Optional[int]] = {n: int(a.shape[2]) for n, a in self.cache.arrays.items()}

    def lookup(self, index: int, view: int) -> dict[str, np.ndarray]:
        return self.cache.lookup(index, view, self.fields)


class OnlineTeacher(nn.Module):
    """A fine-tuned teacher run on the student's view at the teacher's size: frozen three ways
    (``eval()``, ``requires_grad_(False)``, ``torch.inference_mode()``)."""

    def __init__(self, folder: Path, fields: list[str], layer: Optional[int], how: str = "run the teacher stage first",
                 options: Optional[dict[str, str]] = None):
        super().__init__()
        self.model, meta = load_teacher(folder, how)
        self.norm = Normalize(meta["mean"], meta["std"])
        self.img_size, self.fields, self.layer = int(meta["img_size"]), list(fields), layer
        self.options = dict(options or {})
        self.dims: dict[str, Optional[int]] = dict(field_dims(self.model, self.img_size, self.fields, layer, self.options))

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """(B, H, W, 3) uint8 at the teacher's size -> ``{"<field>_t": float32 tensor}``."""
        with torch.inference_mode():
            out = forward_fields(self.model, self.norm(image), self.fields, self.layer, self.options)
        return {f"{k}_t": v.float().clone() for k, v in out.items()}  # clone: usable outside inference mode
