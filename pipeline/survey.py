"""``distil init PATH``: what a data folder holds (layout, classes, counts, image sizes, the validation split that
will be made) and a starter config for it that runs."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml
from PIL import Image

from .atomic import write_text
from .config import ConfigError, config_from_dict
from .data.layout import LAYOUTS, DataLayout, discover
from .data.sets import SPLIT_SEED, VAL_FRACTION, stratified_holdout

SIZE_SAMPLE = 2000  # image headers read for the size summary (evenly spread over the training split)


@dataclass
class Survey:
    """What ``init`` found in a data folder."""

    layout: DataLayout
    sizes: Counter  # (width, height) -> images, over ``sampled`` training images
    sampled: int
    holdout: Optional[np.ndarray]  # (N,) bool: training images held out for validation; None when there is a val split

    @property
    def short_side(self) -> int:
        """The median shorter side of the sampled images (pixels)."""
        sides = [min(wh) for wh, n in self.sizes.items() for _ in range(n)]
        return int(np.median(sides)) if sides else 0


def survey(root: str | Path) -> Survey:
    """Discover ``root`` (any layout of ``LAYOUTS``) and read the sizes of up to ``SIZE_SAMPLE`` training images."""
    layout = discover(root)
    files = layout.train.files
    pick = np.unique(np.linspace(0, len(files) - 1, min(len(files), SIZE_SAMPLE)).round().astype(int)) if files else []
    sizes: Counter = Counter()
    for i in pick:
        try:
            with Image.open(files[i]) as im:
                sizes[im.size] += 1
        except OSError:
            continue  # an unreadable image is named by the pixel cache when the run decodes it
    hold = None if layout.val is not None else stratified_holdout(np.asarray(layout.train.labels))
    return Survey(layout, sizes, len(pick), hold)


def _counts(labels: np.ndarray, names: list[str]) -> str:
    counts = np.bincount(labels, minlength=len(names))
    return ", ".join(f"{n} {c}" for n, c in zip(names, counts))


def describe(s: Survey) -> str:
    """The report ``init`` prints: layout, classes with counts, image sizes, validation and test splits."""
    lay = s.layout
    labels = np.asarray(lay.train.labels)
    lines = [f"data folder: {lay.root}",
             f"layout: {lay.kind} ({LAYOUTS.meta(lay.kind)['detect']})",
             f"classes ({lay.num_classes}), training images per class: {_counts(labels, lay.class_names)}"]
    if s.sizes:
        (w, h), n = s.sizes.most_common(1)[0]
        widths = [wh[0] for wh in s.sizes]
        heights = [wh[1] for wh in s.sizes]
        lines.append(f"image sizes ({s.sampled} read): {len(s.sizes)} distinct, most common {w}x{h} ({n}), "
                     f"width {min(widths)}..{max(widths)}, height {min(heights)}..{max(heights)}")
    if s.holdout is None:
        assert lay.val is not None
        lines.append(f"validation: {len(lay.val)} images in {lay.val.files[0].parent.name if lay.val.files else '?'}/")
    else:
        lines.append(f"validation: none in the folder; holding out {int(s.holdout.sum())} of {len(labels)} training "
                     f"images ({round(VAL_FRACTION * 100)}% of each class, stratified, seed {SPLIT_SEED}; the same "
                     f"split every run): {_counts(labels[s.holdout], lay.class_names)}")
    if lay.test is None:
        lines.append("test: no unlabelled test images; the pipeline ends after the student (its accuracy on the "
                     "validation split), then `distil predict` labels any images")
    else:
        lines.append(f"test: {len(lay.test)} unlabelled images (the submit stage writes a CSV of their classes)")
    return "\n".join(lines)


def starter_config(s: Survey, root: str) -> dict[str, Any]:
    """A config for the surveyed folder: the demo's recipe (ImageNet-pretrained EfficientNet-Lite0 teacher from a
    wheel, 4 cached views, cross-entropy + KD student under the 60k budget), sizes chosen from the images."""
    side = s.short_side or 64
    teacher_size, student_size = (96 if side >= 96 else 64), (64 if side >= 64 else 32)
    return {
        "data": {"root": root, "image_size": int(max(student_size, min(side, 128)))},
        "teacher": {"model": "tf_efficientnet_lite0", "pretrained": "wheel", "img_size": teacher_size, "epochs": 6,
                    "batch_size": 64, "lr": 1.0e-3, "warmup_epochs": 0.3, "aug_scale_min": 0.6},
        # distilling on the unlabelled test images too (teacher targets only) generalises: +6 points on a
        # 10-breed dog set a new user tried (issue 26); check your competition's rules on using them
        "cache": {"views": 4, "scale_min": 0.6, **({"unlabeled": True} if s.layout.test else {})},
        "student": {"model": "dwsep", "img_size": student_size, "epochs": 30, "batch_size": 128,
                    "lr": 5.0e-3, "warmup_epochs": 1,
                    "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "kwargs": {"temperature": 4.0}}]},
    }


def write_config(s: Survey, root: str, out: Path, force: bool = False) -> Path:
    """Write ``starter_config`` to ``out`` (atomically; an existing file only with ``force``), after checking that
    it loads. ``root`` is written as given: a relative path is read from the working directory."""
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; choose another --out or pass --force to replace it")
    lay = s.layout
    head = (f"# written by `distil init {root}` on {time.strftime('%Y-%m-%d')}: layout {lay.kind}, {lay.num_classes} "
            f"classes, {len(lay.train)} training images.\n# Relative paths are read from the working directory. "
            "Every key: docs/config.md\n")
    cfg = starter_config(s, root)
    config_from_dict({**cfg, "name": out.stem}, str(out))  # it validates before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, head + yaml.safe_dump(cfg, sort_keys=False))
    return out
