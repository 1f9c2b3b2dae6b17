"""Batched inference: the one loop that runs a model over a loader of whole images (validation in the engine,
the cache's teacher logits, the teacher as it is, submission, export), and top-1 accuracy."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from .data.datasets import PlainImages, loader
from .progress import progress


@torch.inference_mode()
def predict(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], loader: torch.utils.data.DataLoader,
            normalize: Optional[nn.Module], device: torch.device, tta: bool = False,
            autocast: Callable[[], AbstractContextManager] = nullcontext,
            desc: Optional[str] = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over ``loader`` (items ``{"image": uint8 (H, W, 3), "target", ...}``): returns the (N, C)
    float32 logits and the (N,) targets (-1 where unknown).

    ``normalize`` (None: ``model`` takes the uint8 batch itself) turns (B, H, W, 3) uint8 into (B, 3, H, W);
    ``tta``: mean of the logits of each image and its horizontal mirror (2x the compute); ``autocast``: the
    precision's context; ``desc``: the progress bar's label (None: no bar)."""
    if isinstance(model, nn.Module):
        model.eval()
    out, targets = [], []
    for batch in (progress(loader, desc) if desc else loader):
        x = batch["image"].to(device, non_blocking=True)
        x = normalize(x) if normalize is not None else x
        with autocast():
            y = model(x).float()
            if tta:
                y = (y + model(x.flip(-1 if normalize is not None else 2)).float()) / 2
        out.append(y.cpu())
        targets.append(batch["target"])
    if not out:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(out).numpy(), torch.cat(targets).numpy()


def predict_logits(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], loader: torch.utils.data.DataLoader,
                   normalize: nn.Module, device: torch.device, tta: bool = False,
                   desc: Optional[str] = "predict") -> np.ndarray:
    """The (N, C) float32 logits of ``predict``."""
    return predict(model, loader, normalize, device, tta, desc=desc)[0]


def predict_pixels(model: nn.Module, pixels: np.ndarray, img_size: int, normalize: nn.Module, device: torch.device,
                   *, workers: int = 0, tta: bool = False) -> np.ndarray:
    """Logits (N, C) of ``model`` on whole uint8 images (N, S, S, 3) resized to ``img_size``."""
    dl = loader(PlainImages(pixels, None, img_size), 256, shuffle=False, workers=workers)
    return predict_logits(model, dl, normalize, device, tta=tta)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of (N, C) logits against (N,) labels."""
    return float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")
