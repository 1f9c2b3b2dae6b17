"""The splits a run reads: the data layout opened with the config's options, each split's decoded
pixels, and the set the student is distilled on."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .layout import DataLayout, LayoutError, discover
from .pixels import PixelCache, StackedPixels, build_pixel_cache


# the validation split made when a data folder has none: this share of each class, drawn with this seed (fixed,
# not the run's seed, so runs that differ only in seed are validated on the same images). The split's file lists
# are part of the pixel keys (pixels.split_key) that every stage records: a finished stage never sees another split
VAL_FRACTION = 0.1
SPLIT_SEED = 0


def stratified_holdout(labels: np.ndarray, fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED) -> np.ndarray:
    """(N,) bool mask of the images to hold out: ``round(fraction * n_c)`` of each class's ``n_c`` images (at least
    one where a class has two or more), drawn by a generator seeded with ``seed``. Depends only on ``labels``."""
    rng = np.random.default_rng(seed)
    hold = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, round(fraction * len(idx))) if len(idx) >= 2 else 0
        hold[rng.permutation(idx)[:k]] = True
    return hold


def open_data(cfg: Any) -> DataLayout:
    """Discover ``cfg.data``; with no validation split, hold out a stratified, seeded share of the training images
    (``stratified_holdout``)."""
    layout = discover(cfg.data_root, cfg.data.layout, cfg.data.limit_per_split, cfg.data.skip_bad)
    if layout.val is None:
        hold = stratified_holdout(np.asarray(layout.train.labels))
        logging.getLogger(__name__).warning(
            "%s has no validation split: holding out %d of %d training images (%d%% of each class, stratified, "
            "seed %d)", layout.root, int(hold.sum()), len(hold), round(VAL_FRACTION * 100), SPLIT_SEED)
        layout.val = layout.train.subset(hold)
        layout.val.name = "val"
        layout.train = layout.train.subset(~hold)
    if cfg.data.limit_per_split:
        _check_limit(cfg, layout)
    return layout


def _check_limit(cfg: Any, layout: DataLayout) -> None:
    """``data.limit_per_split`` must leave every class some training images (1 would train without all but one class
    and, with one image, fail in BatchNorm); else ``LayoutError`` with the smallest limit that keeps every class."""
    missing = _classes_without_images(layout.train, layout.num_classes)
    if not len(missing):
        return
    labels = np.asarray(discover(cfg.data_root, cfg.data.layout, None, cfg.data.skip_bad).train.labels)
    need = next((k for k in range(layout.num_classes, len(labels)) if len(np.unique(
        labels[np.linspace(0, len(labels) - 1, k).round().astype(int)])) == layout.num_classes), len(labels))
    c = int(missing[0])
    raise LayoutError(f"data.limit_per_split={cfg.data.limit_per_split} keeps {len(layout.train)} training images and "
                      f"class {c} ({layout.class_names[c][:40]}) gets none of them ({len(missing)} of {layout.num_classes} "
                      f"classes do): set data.limit_per_split to at least {need}, or remove it")


def _classes_without_images(split: Any, num_classes: int) -> np.ndarray:
    return np.flatnonzero(np.bincount(np.asarray(split.labels, dtype=np.int64), minlength=num_classes) == 0)


def pixels(cfg: Any, layout: DataLayout, split: str) -> PixelCache:
    """Decoded ``(N, S, S, 3)`` uint8 pixels of ``split`` (built once by rank 0, then memory-mapped)."""
    from .. import distributed

    workers = max(1, min(4, os.cpu_count() or 1))

    def build() -> PixelCache:
        return build_pixel_cache(layout.split(split), cfg.data.image_size, cfg.path(cfg.runs_dir) / "_pixels",
                                 skip_bad=cfg.data.skip_bad, workers=workers)

    if distributed.world() == 1:
        return _every_class(build(), layout, cfg.data.skip_bad)
    if distributed.is_main():
        try:
            out = build()
        finally:
            distributed.barrier()
        return _every_class(out, layout, cfg.data.skip_bad)
    distributed.barrier()
    return _every_class(build(), layout, cfg.data.skip_bad)  # rank 0 built it: this loads the cache


def _every_class(cache: PixelCache, layout: DataLayout, skip_bad: bool) -> PixelCache:
    """The training pixels must hold every class: ``data.skip_bad`` skipping all of one class's images would
    otherwise train without it, silently."""
    if cache.split.name != "train" or cache.split.labels is None:
        return cache
    missing = _classes_without_images(cache.split, layout.num_classes)
    if len(missing):
        c = int(missing[0])
        lost = next(f for f, y in zip(layout.train.files, layout.train.labels) if y == c)
        raise LayoutError(f"every training image of class {c} ({layout.class_names[c][:40]}) is unreadable and "
                          f"{'data.skip_bad skipped them' if skip_bad else 'none is left'} (e.g. {lost}): the run "
                          "would train without that class. Fix or replace them, or remove the class from the data")
    return cache


@dataclass
class DistillSet:
    """The images the student is distilled on: the training split, then (``cache.unlabeled``) the
    evaluation images with label -1. ``pixels`` is (N, S, S, 3) uint8, ``labels`` (N,) int64."""

    pixels: Any
    labels: np.ndarray
    files: list[str]
    pixel_key: str
    unlabeled_key: Optional[str]  # pixel key of the unlabelled images, None without them

    def __len__(self) -> int:
        return len(self.pixels)


def distill_set(cfg: Any, layout: DataLayout, train: PixelCache, unlabeled: bool) -> DistillSet:
    """Training pixels, plus the unlabelled evaluation images when ``unlabeled``."""
    files = [str(f) for f in train.split.files]
    labels = np.asarray(train.split.labels, dtype=np.int64)
    if not unlabeled:
        return DistillSet(train.pixels, labels, files, train.key, None)
    try:
        layout.split("test")
    except LayoutError as exc:
        raise LayoutError(f"cache.unlabeled: true needs the unlabelled evaluation images: {exc}; "
                          "add them or set cache.unlabeled: false") from None
    test = pixels(cfg, layout, "test")
    return DistillSet(StackedPixels([train.pixels, test.pixels]),
                      np.concatenate([labels, np.full(len(test.pixels), -1, dtype=np.int64)]),
                      files + [str(f) for f in test.split.files], train.key, test.key)
