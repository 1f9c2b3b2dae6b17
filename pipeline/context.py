"""Shared plumbing for the stages: logging, data + pixel caches, checkpoints' models, the run summary."""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .atomic import write_json
from .config import Config
from .data import DataLayout, LayoutError, PixelCache, build_pixel_cache, discover
from .data.pixels import StackedPixels


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def setup_torch(seed: int) -> None:
    """Seed everything and use every core on CPU."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if not torch.cuda.is_available():
        from . import dist

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // dist.world()))  # processes on one machine share its cores


def open_data(cfg: Config) -> DataLayout:
    """Discover the data; with no validation split, hold out every 10th training image."""
    layout = discover(cfg.data_root, cfg.data.layout, cfg.data.limit_per_split)
    if layout.val is None:
        logging.getLogger(__name__).warning("%s has no validation split: holding out 10%% of training", layout.root)
        hold = np.zeros(len(layout.train), bool)
        hold[::10] = True
        layout.val = layout.train.subset(hold)
        layout.val.name = "val"
        layout.train = layout.train.subset(~hold)
    return layout


def pixels(cfg: Config, layout: DataLayout, split: str) -> PixelCache:
    """Decoded ``(N, S, S, 3)`` uint8 pixels of ``split`` (built once by rank 0, then memory-mapped)."""
    from . import dist

    workers = max(1, min(4, os.cpu_count() or 1))

    def build() -> PixelCache:
        return build_pixel_cache(layout.split(split), cfg.data.image_size, cfg.path(cfg.runs_dir) / "_pixels",
                                 skip_bad=cfg.data.skip_bad, workers=workers)

    if dist.world() == 1:
        return build()
    if dist.is_main():
        try:
            out = build()
        finally:
            dist.barrier()
        return out
    dist.barrier()
    return build()  # rank 0 built it: this loads the cache


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


def distill_set(cfg: Config, layout: DataLayout, train: PixelCache, unlabeled: Optional[bool] = None) -> DistillSet:
    """Training pixels, plus the unlabelled evaluation images when ``unlabeled`` (default ``cache.unlabeled``)."""
    files = [str(f) for f in train.split.files]
    labels = np.asarray(train.split.labels, dtype=np.int64)
    if not (cfg.cache.unlabeled if unlabeled is None else unlabeled):
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


def stage_dir(cfg: Config, stage: str) -> Path:
    d = cfg.run_dir / stage
    d.mkdir(parents=True, exist_ok=True)
    cfg.save(d / "config.yaml")
    return d


def finish(cfg: Config, out: Path, section: Optional[str], result: dict[str, Any]) -> dict[str, Any]:
    """Record a finished stage: ``summary.json`` section (if any) and ``<out>/done.json`` (rank 0 only)."""
    from . import dist

    if dist.is_main():
        if section:
            update_summary(cfg, section, result)
        write_json(out / "done.json", result)
    return result


def update_summary(cfg: Config, section: str, values: Any) -> dict[str, Any]:
    """Merge ``{section: values}`` into ``runs/<name>/summary.json`` (atomically)."""
    p = cfg.run_dir / "summary.json"
    data: dict[str, Any] = {}
    if p.is_file():
        try:
            data = json.loads(p.read_text())
        except ValueError:
            data = {}
    data[section] = values
    data["name"] = cfg.name
    write_json(p, data)
    return data


def cmd(stage: str, cfg: Config, config_path: Optional[str]) -> str:
    """The command line that reruns ``stage`` for this config (for error messages)."""
    return f"python -m pipeline {stage} --config {config_path or 'configs/' + cfg.name + '.yaml'}"


def training_setup(cfg: Config, tc: Any, train_ds: Any, val: PixelCache, params: Any) -> tuple[Any, Any, Any, Any]:
    """Loaders, AdamW and the warm-up + cosine schedule for one stage's ``TrainConfig`` ``tc``.

    Returns ``(train_loader, val_loader, optimizer, scheduler)``; the schedule is stepped per batch."""
    from .data.datasets import PlainImages, loader
    from .engine import adamw, cosine_schedule

    train_dl = loader(train_ds, tc.batch_size, shuffle=True, workers=cfg.data.workers, seed=cfg.seed,
                      drop_last=len(train_ds) > tc.batch_size)
    val_dl = loader(PlainImages(val.pixels, val.split.labels, tc.img_size), tc.batch_size * 2, shuffle=False,
                    workers=cfg.data.workers)
    steps = min(len(train_dl), tc.max_steps_per_epoch or len(train_dl))
    opt = adamw(params, tc.lr, tc.weight_decay)
    return train_dl, val_dl, opt, cosine_schedule(opt, steps * tc.epochs, int(steps * tc.warmup_epochs))
