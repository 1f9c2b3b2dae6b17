"""Augmented views that teacher and student share ("consistent teaching").

A view is a crop box and a flip on the ``S x S`` decoded image: ``(x0, y0, w, h, flip)`` int32.
The cache stage samples ``K`` views per training image (view 0 is always the whole image),
records them, and the student replays exactly the recorded view at its own resolution.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import cv2
import numpy as np

from ..registry import Registry

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


# ---- mixed views ("consistent mixing") ---------------------------------------------------------------
# A recorded view may be a mixed image: row (partner, partner_view, lam, bx0, by0, bx1, by1) float32 of an
# (N, K, 7) array; partner -1 = not mixed. With a box (bx1 > bx0, fractions of the side) the partner's view
# is pasted into it (CutMix; lam = the area left to the image); without one the two views are blended
# (mixup: lam * image + (1 - lam) * partner). Teacher and student render exactly this at their own sizes.
MIX_FIELDS = ("partner", "partner_view", "lam", "bx0", "by0", "bx1", "by1")
MIXES: Registry[Callable[[np.random.Generator, float], tuple[float, tuple[float, float, float, float]]]] = Registry("mix")


@MIXES.register("cutmix")
def _cutmix(rng: np.random.Generator, alpha: float) -> tuple[float, tuple[float, float, float, float]]:
    """CutMix (Yun et al., 2019): a box of area ``1 - lam`` (lam ~ Beta(alpha, alpha)), centre uniform, clipped;
    lam is recomputed from the clipped box."""
    lam = float(rng.beta(alpha, alpha))
    cut = math.sqrt(1.0 - lam)
    cx, cy = float(rng.uniform()), float(rng.uniform())
    x0, x1 = max(0.0, cx - cut / 2), min(1.0, cx + cut / 2)
    y0, y1 = max(0.0, cy - cut / 2), min(1.0, cy + cut / 2)
    return 1.0 - (x1 - x0) * (y1 - y0), (x0, y0, x1, y1)


@MIXES.register("mixup")
def _mixup(rng: np.random.Generator, alpha: float) -> tuple[float, tuple[float, float, float, float]]:
    """mixup (Zhang et al., 2018): a blend with lam ~ Beta(alpha, alpha); no box."""
    return float(rng.beta(alpha, alpha)), (0.0, 0.0, 0.0, 0.0)


def sample_mixes(views: np.ndarray, kind: str, prob: float, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """(N, K, 7) float32 mix rows for the (N, K, 5) ``views``: each view but view 0 (the whole image, never
    mixed) is mixed with probability ``prob`` with a random recorded view of a random other image."""
    n, k = views.shape[:2]
    mixes = np.zeros((n, k, 7), dtype=np.float32)
    mixes[..., 0] = -1
    mixes[..., 2] = 1.0
    draw = MIXES.get(kind)
    for i in range(n):
        for j in range(1, k):
            if n < 2 or rng.uniform() >= prob:
                continue
            p = int(rng.integers(n - 1))
            p += p >= i  # never the image itself
            lam, box = draw(rng, alpha)
            mixes[i, j] = (p, int(rng.integers(k)), lam, *box)
    return mixes


def mix_images(img: np.ndarray, other: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Apply one mix row to two (S, S, 3) uint8 renders of the same size: paste ``other`` into the box, or blend."""
    lam, (bx0, by0, bx1, by1) = float(row[2]), (float(v) for v in row[3:7])
    s = img.shape[0]
    if bx1 > bx0:
        x0, x1, y0, y1 = (int(round(v * s)) for v in (bx0, bx1, by0, by1))
        out = img.copy()
        out[y0:y1, x0:x1] = other[y0:y1, x0:x1]
        return out
    return np.clip(np.rint(lam * img.astype(np.float32) + (1 - lam) * other.astype(np.float32)), 0, 255).astype(np.uint8)


def render_mixed(pixels: Any, views: np.ndarray, mixes: Optional[np.ndarray], i: int, k: int, out: int) -> np.ndarray:
    """View ``k`` of image ``i`` at ``out`` px, mixed with its recorded partner when it has one."""
    img = render_view(np.asarray(pixels[i]), views[i, k], out)
    if mixes is None or mixes[i, k, 0] < 0:
        return img
    p, pv = int(mixes[i, k, 0]), int(mixes[i, k, 1])
    return mix_images(img, render_view(np.asarray(pixels[p]), views[p, pv], out), mixes[i, k])


# ---- a whole batch at once ----------------------------------------------------------------------------------
# The per-image functions above are the reference (the cache stage renders the teacher's views with them). A batch
# is rendered into one preallocated (B, out, out, 3) array: one OpenCV call per view writing into its slot (the
# resize is OpenCV's own, so the pixels are the per-image path's exactly), flipped and mixed in place. No per-image
# arrays, dicts or stacking. (Resampling the whole batch in torch instead -- banded batched matmuls with OpenCV's
# weights -- matched it to one grey level but ran ~5x slower than this loop on 2 cores: docs/speed.md.)

def render_batch(pixels: Any, views: np.ndarray, index: np.ndarray, view: np.ndarray, out: int,
                 mixes: Optional[np.ndarray] = None) -> np.ndarray:
    """``render_mixed`` for a batch: view ``view[j]`` of image ``index[j]`` at ``out`` px, mixed with its recorded
    partner where it has one -> uint8 (B, out, out, 3)."""
    index, view = np.asarray(index, np.int64), np.asarray(view, np.int64)
    imgs = np.empty((len(index), out, out, 3), np.uint8)
    for j, (i, (x0, y0, w, h, flip)) in enumerate(zip(index.tolist(), views[index, view].tolist())):
        crop, dst = np.asarray(pixels[i])[y0:y0 + h, x0:x0 + w], imgs[j]
        if h == out and w == out:
            dst[:] = crop
        else:
            cv2.resize(crop, (out, out), dst=dst, interpolation=cv2.INTER_AREA if min(w, h) > out else cv2.INTER_LINEAR)
        if flip:
            dst[:] = dst[:, ::-1]  # numpy copies an overlapping source first
    if mixes is not None:
        rows = mixes[index, view]
        mixed = np.flatnonzero(rows[:, 0] >= 0)
        if len(mixed):
            others = render_batch(pixels, views, rows[mixed, 0].astype(np.int64), rows[mixed, 1].astype(np.int64), out)
            mix_batch(imgs, mixed, others, rows[mixed])
    return imgs


def mix_batch(imgs: np.ndarray, which: np.ndarray, others: np.ndarray, rows: np.ndarray) -> None:
    """``mix_images`` for a batch, in place: ``imgs[which[m]]`` (uint8 (B, S, S, 3)) mixed with ``others[m]`` by mix
    row ``rows[m]`` ((M, 7)): the partner pasted into the box (CutMix; one slice copy each) or, for rows without a
    box, blended (mixup, in float32 as ``mix_images``)."""
    s = imgs.shape[1]
    box = rows[:, 3:7].astype(np.float64)  # float32 fractions, as float(row[k]) reads them
    edges = np.rint(box * s).astype(np.int64)  # x0, y0, x1, y1
    cut = box[:, 2] > box[:, 0]
    for m in np.flatnonzero(cut).tolist():
        x0, y0, x1, y1 = edges[m].tolist()
        imgs[which[m], y0:y1, x0:x1] = others[m, y0:y1, x0:x1]
    blend = np.flatnonzero(~cut)
    if len(blend):
        lam = rows[blend, 2].astype(np.float32)[:, None, None, None]
        rest = (1 - rows[blend, 2].astype(np.float64)).astype(np.float32)[:, None, None, None]
        mine = imgs[which[blend]].astype(np.float32)
        imgs[which[blend]] = np.clip(np.rint(lam * mine + rest * others[blend].astype(np.float32)), 0, 255).astype(np.uint8)
