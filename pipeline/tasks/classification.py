"""Supervised fine-tuning of a classifier (the teacher stage)."""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


class Classification(nn.Module):
    """``model`` trained with label-smoothed cross-entropy on uint8 (B, H, W, 3) images normalised by ``norm``."""

    def __init__(self, model: nn.Module, norm: nn.Module, label_smoothing: float = 0.0):
        super().__init__()
        self.model, self.norm, self.label_smoothing = model, norm, label_smoothing

    def logits(self, image: Tensor) -> Tensor:
        """(B, H, W, 3) uint8 -> (B, C)."""
        return self.model(self.norm(image))

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        loss = F.cross_entropy(self.logits(batch["image"]), batch["target"], label_smoothing=self.label_smoothing)
        return {"loss": loss, "ce": loss.detach()}
