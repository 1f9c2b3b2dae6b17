"""Batched inference helpers."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from .data.datasets import PlainImages, loader
from .progress import progress


@torch.inference_mode()
def predict_logits(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], loader: torch.utils.data.DataLoader,
                   normalize: nn.Module, device: torch.device, tta: bool = False) -> np.ndarray:
    """Run ``model`` over ``loader`` (items ``{"image": uint8 (H, W, 3), ...}``): returns (N, C) float32.

    ``tta``: mean of the logits of each (B, 3, H, W) image and its horizontal mirror (2x the compute).
    """
    if isinstance(model, nn.Module):
        model.eval()
    out = []
    for batch in progress(loader, "predict"):
        x = normalize(batch["image"].to(device, non_blocking=True))
        y = model(x).float()
        if tta:
            y = (y + model(x.flip(-1)).float()) / 2
        out.append(y.cpu())
    return torch.cat(out).numpy()


def predict_pixels(model: nn.Module, pixels: np.ndarray, img_size: int, normalize: nn.Module, device: torch.device,
                   *, workers: int = 0, tta: bool = False) -> np.ndarray:
    """Logits (N, C) of ``model`` on whole uint8 images (N, S, S, 3) resized to ``img_size``."""
    dl = loader(PlainImages(pixels, None, img_size), 256, shuffle=False, workers=workers)
    return predict_logits(model, dl, normalize, device, tta=tta)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of (N, C) logits against (N,) labels."""
    return float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")
