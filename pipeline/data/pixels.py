"""Decoded-pixel cache: every image decoded and resized once into a uint8 memmap.

``runs/_pixels/<key>/<split>.u8`` holds ``(N, S, S, 3)`` uint8; ``<split>.json`` is its manifest
(files, S). The key hashes every file's name and bytes, so a changed data folder gets a new cache
while a copy of the same data (new paths, new mtimes) reuses it; a manifest that does not match its array (a half-written cache) is rebuilt.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..atomic import NotWritableError, atomic_path, remove_stale_temps, require_space, sha256_file, sha256_json, write_json
from ..locks import held
from .images import load_square
from .layout import LayoutError, Split

log = logging.getLogger(__name__)
FORMAT_VERSION = 3  # 3: EXIF orientation applied


class BadImageError(ValueError):
    """Some images could not be decoded; the message lists each path and the fix."""

    def __init__(self, bad: list[tuple[Path, str]]):
        self.bad = bad
        lines = "\n".join(f"  {p}: {why}" for p, why in bad[:50])
        more = f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else ""
        super().__init__(
            f"{len(bad)} unreadable image(s):\n{lines}{more}\n"
            "Fix or delete these files, or set data.skip_bad: true to skip them (each is logged)."
        )


# a photo is a few MB; a file past this is not an image this pipeline should read (nor hash: a 20 GB sparse
# ".jpg" took a minute to hash before its decode failed)
MAX_IMAGE_BYTES = 512 * 2**20
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a",  # JPEG, PNG, BMP, GIF
               b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF, BigTIFF (WebP: RIFF....WEBP, below)


def image_problem(path: str | Path) -> Optional[str]:
    """Why ``path`` cannot be an image, from its size and first bytes only (None: it may be one). Checked before
    a file is hashed or decoded."""
    try:
        size = os.stat(path).st_size
        if size == 0:
            return "empty file"
        if size > MAX_IMAGE_BYTES:
            return (f"{size / 2**20:,.0f} MB, more than an image may be ({MAX_IMAGE_BYTES >> 20} MB); "
                    "it is not read or hashed")
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return f"not an image file (starts with {head[:8]!r}; JPEG, PNG, BMP, GIF, TIFF or WebP expected)"


def _decode(args: tuple[str, int]) -> tuple[Optional[np.ndarray], str]:
    path, size = args
    problem = image_problem(path)
    if problem:
        return None, problem
    try:
        return load_square(path, size), ""
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad image
        return None, f"{type(exc).__name__}: {exc}"


def split_key(split: Split, size: int) -> str:
    """Hash of the split's files (last three path parts and content) and the size: moving or
    re-copying the data folder keeps the key; changing, adding or removing a file changes it."""
    files = [("/".join(Path(f).parts[-3:]), f"unreadable: {why}" if (why := image_problem(f)) else sha256_file(f))
             for f in split.files]  # a file that cannot be an image is not hashed (the decode then lists it)
    return sha256_json({"v": FORMAT_VERSION, "size": size, "files": files})


@dataclass
class PixelCache:
    """A split's decoded pixels plus which of its files they came from."""

    split: Split  # only the files that decoded (or all, with placeholders, for the test split)
    pixels: np.ndarray  # (N, S, S, 3) uint8, memory-mapped read-only
    key: str

    @property
    def size(self) -> int:
        return int(self.pixels.shape[1])


class StackedPixels:
    """Rows of several ``(N_i, S, S, 3)`` arrays read as one ``(sum N_i, S, S, 3)`` array, without copying
    (e.g. the training images followed by the unlabelled evaluation images)."""

    def __init__(self, parts: list[np.ndarray]):
        if len({p.shape[1:] for p in parts}) != 1:
            raise ValueError(f"stacked pixel arrays differ in image shape: {[p.shape for p in parts]}")
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: Union[int, slice]) -> np.ndarray:
        if isinstance(i, slice):
            rows = [self[j] for j in range(*i.indices(len(self)))]
            return np.stack(rows) if rows else np.empty((0, *self.shape[1:]), self.dtype)
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} images")
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][i - self.offsets[k]]


def _load(folder: Path, name: str, key: str, split: Split) -> Optional[PixelCache]:
    man_p, arr_p = folder / f"{name}.json", folder / f"{name}.u8"
    if not (man_p.is_file() and arr_p.is_file()):
        return None
    import json

    try:
        man = json.loads(man_p.read_text())
        shape = tuple(man["shape"])
        if man.get("key") != key or arr_p.stat().st_size != int(np.prod(shape)):
            log.warning("pixel cache %s does not match its manifest; rebuilding", arr_p)
            return None
        keep = np.asarray(man["keep"], dtype=bool)
    except (ValueError, KeyError, TypeError):
        log.warning("pixel cache manifest %s is unreadable; rebuilding", man_p)
        return None
    pixels = np.memmap(arr_p, dtype=np.uint8, mode="r", shape=shape)
    return PixelCache(split.subset(keep), pixels, key)


def build_pixel_cache(
    split: Split, size: int, cache_root: Path, *, skip_bad: bool = False, workers: int = 2
) -> PixelCache:
    """Decode ``split`` once at ``size`` (or reuse a matching cache) and return the memmap.

    Bad images stop the build with a list of paths (``BadImageError``) unless ``skip_bad``:
    then training/validation files are dropped and unlabelled test images become black
    placeholders (the submission still needs their ids); each one is logged.
    """
    key = split_key(split, size)
    folder = cache_root / key[:16]
    cached = _load(folder, split.name, key, split)
    if cached is not None:
        return cached
    try:
        with held(folder / ".lock", f"pixel cache {folder}"):
            return _load(folder, split.name, key, split) or _build(split, size, folder, key, skip_bad, workers)
    except NotWritableError as exc:  # a read-only runs folder (submit reading another user's run): decode, not cache
        log.warning("%s; decoding the %d %s images in memory instead (not cached)", exc, len(split), split.name)
        out = np.zeros((max(len(split), 1), size, size, 3), np.uint8)
        keep, m, _ = _decode_into(out, split, size, skip_bad, workers)
        return PixelCache(split.subset(keep), out[:m], key)


def _build(split: Split, size: int, folder: Path, key: str, skip_bad: bool, workers: int) -> PixelCache:
    """Decode ``split`` into ``folder`` (the caller holds the folder's lock)."""
    remove_stale_temps(folder)  # partial arrays of a killed writer
    n = len(split)
    arr_p = folder / f"{split.name}.u8"
    require_space(folder, max(n, 1) * size * size * 3, f"the {split.name} pixel cache ({n} images at {size} px)")
    with atomic_path(arr_p) as tmp:
        out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(max(n, 1), size, size, 3))
        keep, m, bad = _decode_into(out, split, size, skip_bad, workers)
        out.flush()
        del out
        os.truncate(tmp, m * size * size * 3)
    shape = [m, size, size, 3]
    write_json(folder / f"{split.name}.json", {"key": key, "shape": shape, "keep": keep.tolist(),
                                               "files": [str(f) for f in split.files], "bad": [[str(p), w] for p, w in bad]})
    pixels = np.memmap(arr_p, dtype=np.uint8, mode="r", shape=tuple(shape))
    return PixelCache(split.subset(keep), pixels, key)


def _decode_into(out: np.ndarray, split: Split, size: int, skip_bad: bool,
                 workers: int) -> tuple[np.ndarray, int, list[tuple[Path, str]]]:
    """Decode ``split`` into the rows of ``out`` ``(N, S, S, 3)``; returns ``(keep, m, bad)``: which files are kept,
    how many leading rows hold them, and each unreadable file with why. Bad images raise ``BadImageError`` unless
    ``skip_bad``: then labelled files are dropped (the kept rows moved to the front), unlabelled ones left black."""
    n = len(split)
    bad: list[tuple[Path, str]] = []
    keep = np.ones(n, dtype=bool)
    for i, (img, why) in enumerate(_map([(str(f), size) for f in split.files], workers)):
        if img is None:
            bad.append((split.files[i], why))
            keep[i] = False
            out[i] = 0
        else:
            out[i] = img
    if bad and not skip_bad:
        raise BadImageError(bad)
    if split.labels is not None and n and not keep.any():  # nothing left to train on: no empty memmap
        raise LayoutError(f"every one of the {n} images in {split.files[0].parent} is unreadable (e.g. "
                          f"{split.files[0].name}: {bad[0][1][:120]}); data.skip_bad skips bad images but would "
                          "leave none: fix the files, or point data.root at the right folder")
    for p, why in bad:
        log.warning("skipping unreadable image %s (%s)", p, why)
    if split.labels is None or not bad:
        keep[:] = True  # test split: placeholders keep every id
        return keep, n, bad
    idx = np.flatnonzero(keep)  # compact: move kept rows to the front
    for j, i in enumerate(idx):
        if i != j:
            out[j] = out[i]
    return keep, len(idx), bad


def _map(jobs: list[tuple[str, int]], workers: int):
    if workers <= 1 or len(jobs) < 64:
        return map(_decode, jobs)
    ex = ProcessPoolExecutor(max_workers=workers)
    try:
        return list(ex.map(_decode, jobs, chunksize=32))
    finally:
        ex.shutdown()
