"""Find the splits of a data folder.

Three layouts are understood (``LAYOUTS``):

* **HW13 / Food-11**: ``training/<label>_<n>.jpg``, ``validation/<label>_<n>.jpg``,
  ``evaluation/0000.jpg`` (unlabelled), optional ``sample_submission.csv`` and ``classes.txt``.
  (``train``/``valid``/``val``/``test`` are accepted as folder aliases.)
* **Class folders** (ImageFolder): ``train/<class>/*.jpg``, ``val/<class>/*.jpg`` and an optional
  flat ``test/`` (or ``evaluation/``) of unlabelled images.
* **Class folders at the top** (``folders``): ``<class>/*.jpg`` and an optional ``test/``; the validation split
  is made by ``pipeline.data.sets.open_data`` (stratified, seeded).
"""
from __future__ import annotations

import contextvars
import logging
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..registry import Registry

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
LABELLED = re.compile(r"^(-?[0-9]+)_([0-9]+)$")  # ASCII digits only (str.isdigit and \d accept e.g. Arabic-Indic)
MAX_LABEL = 999_999  # a label read from a file name above this is a typo, not a class (and would overflow int64)
ALIASES = {
    "train": ("training", "train"),
    "val": ("validation", "valid", "val"),
    "test": ("evaluation", "test"),
}


_SKIP_BAD: contextvars.ContextVar[bool] = contextvars.ContextVar("skip_bad", default=False)


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


def _is_regular(p: Path) -> bool:
    """A regular file (through symlinks); FIFOs, sockets, devices, broken or looping links are not."""
    try:
        return stat.S_ISREG(p.stat().st_mode)
    except OSError:  # broken link, link loop, permission
        return False


def _image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` in sorted order. Entries that look like images but are not regular
    files (a directory named ``0_50.jpg``, a FIFO that would block a reader forever, a broken or looping
    symlink) are listed and stop the run, or are skipped with ``data.skip_bad``."""
    files, ignored, odd = [], 0, []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if "\\" in p.name:
            raise LayoutError(
                f"{p}: file name contains a backslash (a Windows path unpacked as one name). "
                f"Unpack the archive with a tool that keeps folders, or rename the file to {p.name.split(chr(92))[-1]!r}"
            )
        if p.suffix.lower() in IMAGE_EXTS:
            if _is_regular(p):
                files.append(p)
            else:
                odd.append(p)
        elif not p.is_dir():
            ignored += 1
    if ignored:
        log.warning("%s: ignored %d non-image file(s)", folder, ignored)
    if odd:
        what = "\n".join(f"  {p}: {_kind(p)}" for p in odd[:50])
        if not _SKIP_BAD.get():
            raise LayoutError(f"{len(odd)} unreadable image entr{'y' if len(odd) == 1 else 'ies'} in {folder}:\n{what}\n"
                              "Remove or replace them, or set data.skip_bad: true to skip them (each is logged).")
        for p in odd:
            log.warning("skipping %s: %s", p, _kind(p))
    return files


def _kind(p: Path) -> str:
    if p.is_symlink() and not p.exists():
        try:
            p.stat()
        except OSError as exc:
            return f"broken or looping symlink ({exc.strerror})"
    if p.is_dir():
        return "a directory, not an image file"
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        return f"cannot stat ({exc.strerror})"
    return "a FIFO (reading it would block)" if stat.S_ISFIFO(mode) else "not a regular file"


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
        label = int(m.group(1))
        if label > MAX_LABEL:
            raise LayoutError(f"{f}: label {m.group(1)[:20]} is not a class number (at most {MAX_LABEL}); HW13 labels "
                              "count from 0 (e.g. 3_123.jpg): rename the file")
        labels.append(label)
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


def _warn_rare_classes(train: Split, counts: np.ndarray) -> None:
    """Without classes.txt the classes are 0..max label: a class with far fewer images than the others is
    most likely a mislabelled file (``3_5.jpg`` in a 3-class set makes a 4th class). Say so, with its files."""
    typical = float(np.median(counts[counts > 0])) if (counts > 0).any() else 0.0
    for c in np.flatnonzero((counts > 0) & (counts < max(2.0, typical / 5))):
        files = [str(f) for f, y in zip(train.files, train.labels) if y == c]  # type: ignore[arg-type]
        log.warning("CLASS %d HAS ONLY %d TRAINING IMAGE(S) (typical: %d) and there is no classes.txt, so it is "
                    "counted as a class of its own: %s%s. If this is a typo in the file name, rename it; if the class "
                    "is real, add classes.txt (one name per line) to make the class list explicit",
                    c, len(files), typical, ", ".join(files[:10]), " ..." if len(files) > 10 else "")


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
        present = np.unique(train.labels)  # type: ignore[arg-type]
        num_classes = int(present[-1]) + 1
        if num_classes > len(present) and present[0] >= 0:  # a gap: name it (and the file) before listing classes
            missing = int(np.flatnonzero(present != np.arange(len(present)))[0])
            f = train.files[int(np.argmax(train.labels))]  # type: ignore[arg-type]
            raise LayoutError(
                f"{tr}: class {missing} (no file named {missing}_<n>.jpg) has no training images; without "
                f"classes.txt the classes are 0..max label, and {f.name} has label {num_classes - 1} while only "
                f"{len(present)} distinct labels are present: rename it, or list the classes in classes.txt")
        names, src = [str(i) for i in range(num_classes)], "classes are 0..max training label"
    for s in (train, val):
        if s is not None:
            _check_labels(s, num_classes, src)
    counts = np.bincount(train.labels, minlength=num_classes)  # type: ignore[arg-type]
    if not _read_classes(root):
        _warn_rare_classes(train, counts)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise LayoutError(f"{tr}: class {int(empty[0])} ({names[empty[0]]}) has no training images; every class needs some")
    sub = root / "sample_submission.csv"
    return DataLayout("hw13", root, train, val, test, num_classes, names, sub if sub.is_file() else None)


def _class_folder_split(folder: Path, classes: list[str], name: str, ignore: set[str] = set()) -> Split:
    files: list[Path] = []
    labels: list[int] = []
    extra = set(_class_dirs(folder)) - set(classes) - ignore
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
    classes = sorted(p.name for p in tr.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.suffix.lower() not in IMAGE_EXTS)
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


def _class_dirs(folder: Path) -> list[str]:
    """The sub-folders of ``folder`` that can be classes (hidden ones, archive debris and image-named ones aside)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and p.name not in NOT_DATA and p.suffix.lower() not in IMAGE_EXTS)


def _discover_folders(root: Path) -> DataLayout:
    """Class folders at the top, ``root/<class>/*.jpg`` (a phone's or a photo app's export), with an optional
    unlabelled ``test/`` (or ``evaluation/``). There is no validation split: ``open_data`` holds out a stratified,
    seeded share of each class."""
    td = _find_dir(root, "test")
    classes = [c for c in _class_dirs(root) if td is None or c != td.name]
    split_dirs = [c for c in classes if c in ALIASES["train"] + ALIASES["val"]]
    if split_dirs:
        raise LayoutError(f"{root}: has {split_dirs[0]}/ but no training/ or train/ folder; put the training images "
                          "in training/ (HW13) or train/<class>/ (class folders), or every class folder at the top")
    nested = [c for c in classes if _find_dir(root / c, "train") is not None]
    if nested:
        raise LayoutError(f"{root}: {nested[0]}/ holds a training folder, so it is not a class: set data.root to the "
                          f"folder to use, e.g. data.root={root / nested[0]}")
    if len(classes) < 2:
        raise LayoutError(f"{root}: found {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); a classifier "
                          "needs at least two, e.g. photos/cat/*.jpg and photos/dog/*.jpg")
    train = _class_folder_split(root, classes, "train", ignore={td.name} if td else set())
    counts = np.bincount(train.labels, minlength=len(classes))  # type: ignore[arg-type]
    for i in np.flatnonzero(counts == 0):
        raise LayoutError(f"{root / classes[i]}: class {classes[i]!r} has no images; every class needs some "
                          "(images directly inside the class folder)")
    test = _unlabelled(td, "test") if td else None
    sub = root / "sample_submission.csv"
    return DataLayout("folders", root, train, None, test, len(classes), classes, sub if sub.is_file() else None)


LAYOUTS: Registry[Callable[[Path], DataLayout]] = Registry("layout")
LAYOUTS.register("hw13", detect="flat labelled files: training/<label>_<n>.jpg")(_discover_hw13)
LAYOUTS.register("imagefolder", detect="class folders: train/<class>/*.jpg")(_discover_imagefolder)
LAYOUTS.register("folders", detect="class folders at the top: <class>/*.jpg (no train/: a validation split is made)")(
    _discover_folders)


def detect_layout(root: Path) -> str:
    """``hw13`` when the training folder holds images, ``imagefolder`` when it holds class folders, ``folders``
    when there is no training folder but class folders at the top; a mixture of both is refused (a stray sub-folder must not hide the flat images, or the reverse)."""
    tr = _find_dir(root, "train")
    if tr is None and _class_dirs(root):
        return "folders"
    if tr is None:
        raise LayoutError(
            f"{root}: no training/ or train/ folder and no class folders. Expected the HW13 layout "
            "(training/<label>_<n>.jpg), class folders (train/<class>/*.jpg) or class folders at the top (<class>/*.jpg)"
        )
    entries = [p for p in tr.iterdir() if not p.name.startswith(".")]
    dirs = sorted(p.name for p in entries if p.is_dir() and p.suffix.lower() not in IMAGE_EXTS)
    flat = [p for p in entries if p.suffix.lower() in IMAGE_EXTS and _is_regular(p)]
    if dirs and flat:
        raise LayoutError(
            f"{tr} mixes {len(flat)} image file(s) (HW13 layout, e.g. {flat[0].name}) with sub-folder(s) "
            f"{dirs[:5]} (class-folder layout). Move the stray folder(s) out, or set data.layout: hw13 "
            "(ignores the folders) or data.layout: imagefolder (ignores the flat files)")
    return "imagefolder" if dirs else "hw13"


# how the data folders of the shipped configs are made, by folder name (a missing one's message says it)
DATA_RECIPES = {"demo-fmnist": "build it with `make demo-data`", "mnist": "build it with `make mnist-data`",
                "food11": "download it with `make food11-data` (needs Kaggle credentials)"}


# folders an archive tool adds beside the real content (macOS's zip), never data
NOT_DATA = {"__MACOSX"}


def follow_single_folder(root: Path) -> Path:
    """``root`` itself when it has a training folder; else, when it holds a single folder (hidden ones and
    ``__MACOSX`` aside) that has one, that folder, logged: an archive unpacked with its top-level folder
    (``data/food11/Food-11/training/``) reads the same as one without (``data/food11/training/``)."""
    if _find_dir(root, "train") is not None:
        return root
    subs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in NOT_DATA]
    if len(subs) == 1 and _find_dir(subs[0], "train") is not None:
        log.info("data root %s holds a single folder, %s/, with the data inside: reading %s", root, subs[0].name, subs[0])
        return subs[0]
    inside = [p.name for p in sorted(subs) if _find_dir(p, "train") is not None]
    if len(inside) > 1:
        raise LayoutError(f"{root}: no training/ folder, but {len(inside)} folders inside have one ({', '.join(inside)}): "
                          f"set data.root to the one to use, e.g. data.root={root / inside[0]}")
    return root


def discover(root: str | Path, layout: str = "auto", limit_per_split: Optional[int] = None,
             skip_bad: bool = False) -> DataLayout:
    """Inspect ``root`` and return its splits; raise ``LayoutError`` naming the folder on any mismatch.
    ``skip_bad``: entries that are not readable image files are logged and skipped instead."""
    root = Path(root)
    if not root.is_dir():
        how = DATA_RECIPES.get(root.name)
        raise LayoutError(f"data folder {root} does not exist; {how + ', or ' if how else ''}set data.root in the "
                          "config (with make: ARGS=data.root=/path/to/data)")
    outer, root = root, follow_single_folder(root)
    token = _SKIP_BAD.set(skip_bad)
    try:
        out = LAYOUTS.get(detect_layout(root) if layout == "auto" else layout)(root)
    finally:
        _SKIP_BAD.reset(token)
    if out.sample_submission is None and root != outer and (outer / "sample_submission.csv").is_file():
        out.sample_submission = outer / "sample_submission.csv"
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
