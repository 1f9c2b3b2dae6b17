"""Find the splits of a data folder.

Two layouts are understood:

* **HW13 / Food-11**: ``training/<label>_<n>.jpg``, ``validation/<label>_<n>.jpg``,
  ``evaluation/0000.jpg`` (unlabelled), optional ``sample_submission.csv`` and ``classes.txt``.
  (``train``/``valid``/``val``/``test`` are accepted as folder aliases.)
* **Class folders** (ImageFolder): ``train/<class>/*.jpg``, ``val/<class>/*.jpg`` and an optional
  flat ``test/`` (or ``evaluation/``) of unlabelled images.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
LABELLED = re.compile(r"^(-?\d+)_(\d+)$")
ALIASES = {
    "train": ("training", "train"),
    "val": ("validation", "valid", "val"),
    "test": ("evaluation", "test"),
}


class LayoutError(ValueError):
    """The data folder does not have the expected layout; the message names the path and the fix."""


@dataclass
class Split:
    """One split: files in a fixed (sorted) order, integer labels (None when unlabelled), ids (stems)."""

    name: str
    files: list[Path]
    labels: Optional[np.ndarray]  # (N,) int64
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, keep: np.ndarray) -> "Split":
        keep = np.asarray(keep, dtype=bool)
        return Split(
            self.name,
            [f for f, k in zip(self.files, keep) if k],
            None if self.labels is None else self.labels[keep],
            [i for i, k in zip(self.ids, keep) if k],
        )


@dataclass
class DataLayout:
    kind: str
    root: Path
    train: Split
    val: Optional[Split]
    test: Optional[Split]
    num_classes: int
    class_names: list[str]
    sample_submission: Optional[Path]

    def split(self, name: str) -> Split:
        s = getattr(self, name)
        if s is None:
            raise LayoutError(f"{self.root}: split {name!r} is missing (expected one of {', '.join(ALIASES[name])}/)")
        return s


def _find_dir(root: Path, key: str) -> Optional[Path]:
    for alias in ALIASES[key]:
        if (root / alias).is_dir():
            return root / alias
    return None


def _image_files(folder: Path) -> list[Path]:
    files, ignored = [], 0
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        if "\\" in p.name:
            raise LayoutError(
                f"{p}: file name contains a backslash (a Windows path unpacked as one name). "
                f"Unpack the archive with a tool that keeps folders, or rename the file to {p.name.split(chr(92))[-1]!r}"
            )
        if p.suffix.lower() in IMAGE_EXTS:
            files.append(p)
        else:
            ignored += 1
    if ignored:
        log.warning("%s: ignored %d non-image file(s)", folder, ignored)
    return files


def _check_unique_ids(files: list[Path]) -> list[str]:
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise LayoutError(f"{f}: duplicate id {f.stem!r} (also {seen[f.stem].name}); each image id must be unique")
        seen[f.stem] = f
    return [f.stem for f in files]


def _read_classes(root: Path) -> Optional[list[str]]:
    p = root / "classes.txt"
    if not p.is_file():
        return None
    names = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    return names or None


def _hw13_labelled(folder: Path, name: str) -> Split:
    files = _image_files(folder)
    if not files:
        raise LayoutError(f"{folder}: no images found; expected files named <label>_<n>.jpg (e.g. 3_123.jpg)")
    labels = []
    for f in files:
        m = LABELLED.match(f.stem)
        if not m:
            raise LayoutError(
                f"{f}: cannot read a label from the name; HW13 layout expects <label>_<n>.jpg (e.g. 3_123.jpg). "
                "For class folders use data.layout: imagefolder"
            )
        labels.append(int(m.group(1)))
    ids = _check_unique_ids(files)
    return Split(name, files, np.asarray(labels, dtype=np.int64), ids)


def _unlabelled(folder: Path, name: str) -> Split:
    files = _image_files(folder)
    if not files:
        raise LayoutError(f"{folder}: no images found; expected unlabelled images such as 0000.jpg")
    return Split(name, files, None, _check_unique_ids(files))


def _check_labels(split: Split, num_classes: int, class_src: str) -> None:
    assert split.labels is not None
    bad = np.flatnonzero((split.labels < 0) | (split.labels >= num_classes))
    if len(bad):
        f = split.files[bad[0]]
        raise LayoutError(
            f"{f}: label {split.labels[bad[0]]} is outside 0..{num_classes - 1} ({class_src}); "
            f"{len(bad)} file(s) affected. Fix the file name or the class list"
        )


def _discover_hw13(root: Path) -> DataLayout:
    tr = _find_dir(root, "train")
    if tr is None:
        raise LayoutError(f"{root}: no training/ folder; expected training/<label>_<n>.jpg, validation/, evaluation/")
    train = _hw13_labelled(tr, "train")
    vd = _find_dir(root, "val")
    val = _hw13_labelled(vd, "val") if vd else None
    td = _find_dir(root, "test")
    test = _unlabelled(td, "test") if td else None
    names = _read_classes(root)
    if names:
        num_classes, src = len(names), f"{root / 'classes.txt'} lists {len(names)} classes"
    else:
        num_classes = int(train.labels.max()) + 1  # type: ignore[union-attr]
        names, src = [str(i) for i in range(num_classes)], "classes are 0..max training label"
    for s in (train, val):
        if s is not None:
            _check_labels(s, num_classes, src)
    counts = np.bincount(train.labels, minlength=num_classes)  # type: ignore[arg-type]
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise LayoutError(f"{tr}: class {int(empty[0])} ({names[empty[0]]}) has no training images; every class needs some")
    sub = root / "sample_submission.csv"
    return DataLayout("hw13", root, train, val, test, num_classes, names, sub if sub.is_file() else None)


def _class_folder_split(folder: Path, classes: list[str], name: str) -> Split:
    files: list[Path] = []
    labels: list[int] = []
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    extra = set(present) - set(classes)
    if extra:
        raise LayoutError(f"{folder}: class folder(s) {sorted(extra)} do not exist in the training split")
    for idx, c in enumerate(classes):
        if not (folder / c).is_dir():
            continue
        cf = _image_files(folder / c)
        files += cf
        labels += [idx] * len(cf)
    return Split(name, files, np.asarray(labels, dtype=np.int64), [f"{f.parent.name}/{f.stem}" for f in files])


def _discover_imagefolder(root: Path) -> DataLayout:
    tr = _find_dir(root, "train")
    if tr is None:
        raise LayoutError(f"{root}: no train/ folder; class-folder layout expects train/<class>/*.jpg")
    classes = sorted(p.name for p in tr.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise LayoutError(f"{tr}: no class folders; expected train/<class>/*.jpg")
    train = _class_folder_split(tr, classes, "train")
    counts = np.bincount(train.labels, minlength=len(classes))  # type: ignore[arg-type]
    for i in np.flatnonzero(counts == 0):
        raise LayoutError(f"{tr / classes[i]}: class {classes[i]!r} has no images; every class needs some")
    vd = _find_dir(root, "val")
    val = _class_folder_split(vd, classes, "val") if vd else None
    td = _find_dir(root, "test")
    test = _unlabelled(td, "test") if td else None
    sub = root / "sample_submission.csv"
    return DataLayout("imagefolder", root, train, val, test, len(classes), classes, sub if sub.is_file() else None)


def discover(root: str | Path, layout: str = "auto", limit_per_split: Optional[int] = None) -> DataLayout:
    """Inspect ``root`` and return its splits; raise ``LayoutError`` naming the folder on any mismatch."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"data folder {root} does not exist; set data.root in the config (or build the demo set with `make demo-data`)")
    if layout == "auto":
        tr = _find_dir(root, "train")
        if tr is None:
            raise LayoutError(
                f"{root}: no training/ or train/ folder. Expected the HW13 layout (training/<label>_<n>.jpg) "
                "or class folders (train/<class>/*.jpg)"
            )
        layout = "imagefolder" if any(p.is_dir() and not p.name.startswith(".") for p in tr.iterdir()) else "hw13"
    out = _discover_hw13(root) if layout == "hw13" else _discover_imagefolder(root)
    if limit_per_split:
        for name in ("train", "val"):  # test stays whole: the submission needs every id
            s = getattr(out, name)
            if s is not None and len(s) > limit_per_split:
                # keep every class: take an evenly strided subset rather than the first N
                idx = np.linspace(0, len(s) - 1, limit_per_split).round().astype(int)
                keep = np.zeros(len(s), bool)
                keep[idx] = True
                setattr(out, name, s.subset(keep))
    return out
