"""Decode any image file into a square uint8 RGB array, robustly.

Grayscale, palette, RGBA/LA and 16-bit images are converted to 8-bit RGB; large JPEGs are
decoded at reduced size (``draft``); unreadable files raise ``OSError``/``ValueError``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey block


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited on white, 16-bit scaled down)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def load_square(path: str | Path, size: int) -> np.ndarray:
    """Read ``path``, resize its shorter side to ``size`` and centre-crop: returns (size, size, 3) uint8."""
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (size * 2, size * 2))  # decode big JPEGs at a fraction of full size
        im.load()
        im = to_rgb(ImageOps.exif_transpose(im))  # a phone photo's EXIF orientation: pixels as it is shown
        w, h = im.size
        if w < 1 or h < 1:
            raise ValueError("image has zero size")
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8)
