"""Augmented views that teacher and student share ("consistent teaching").

A view is a crop box and a flip on the ``S x S`` decoded image: ``(x0, y0, w, h, flip)`` int32.
The cache stage samples ``K`` views per training image (view 0 is always the whole image),
records them, and the student replays exactly the recorded view at its own resolution.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

VIEW_FIELDS = ("x0", "y0", "w", "h", "flip")


def sample_views(n: int, k: int, size: int, scale_min: float, rng: np.random.Generator,
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """RandomResizedCrop-style boxes + horizontal flips: returns (n, k, 5) int32; view 0 is the identity."""
    views = np.zeros((n, k, 5), dtype=np.int32)
    views[:, 0] = (0, 0, size, size, 0)
    area = size * size
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for i in range(n):
        for j in range(1, k):
            for _ in range(10):
                target = area * rng.uniform(scale_min, 1.0)
                ar = math.exp(rng.uniform(*log_r))
                w = int(round(math.sqrt(target * ar)))
                h = int(round(math.sqrt(target / ar)))
                if 0 < w <= size and 0 < h <= size:
                    break
            else:
                w = h = size
            x0 = int(rng.integers(0, size - w + 1))
            y0 = int(rng.integers(0, size - h + 1))
            views[i, j] = (x0, y0, w, h, int(rng.integers(0, 2)))
    return views


def render_view(img: np.ndarray, view: np.ndarray, out: int) -> np.ndarray:
    """Crop ``img`` (S, S, 3) uint8 by ``view``, resize to (out, out, 3), flip if asked."""
    x0, y0, w, h, flip = (int(v) for v in view)
    crop = img[y0:y0 + h, x0:x0 + w]
    if crop.shape[0] != out or crop.shape[1] != out:
        interp = cv2.INTER_AREA if min(w, h) > out else cv2.INTER_LINEAR
        crop = cv2.resize(np.ascontiguousarray(crop), (out, out), interpolation=interp)
    if flip:
        crop = crop[:, ::-1]
    return np.array(crop, order="C")  # always a fresh writable array (never a view of the memmap)
