"""Batched inference helpers."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from .progress import progress


@torch.inference_mode()
def predict_logits(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], loader: torch.utils.data.DataLoader,
                   normalize: nn.Module, device: torch.device) -> np.ndarray:
    """Run ``model`` over ``loader`` (items ``(uint8 image, label, index, ...)``): returns (N, C) float32."""
    if isinstance(model, nn.Module):
        model.eval()
    out = []
    for batch in progress(loader, "predict"):
        x = normalize(batch[0].to(device, non_blocking=True))
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of (N, C) logits against (N,) labels."""
    return float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")
