"""The embedded default data: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) in the HW13 layout.

Real images that a package ships, so the whole pipeline runs with no network and no Food-11.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_text

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX (MNIST) file, gzipped or not: images (N, 28, 28) uint8 or labels (N,) uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def build_demo(out: Path, source: Path = FMNIST_DIR, per_class: int = 200, val_per_class: int = 50,
               n_eval: int = 500, seed: int = 0) -> Path:
    """Write ``training/``, ``validation/``, ``evaluation/``, ``sample_submission.csv``, ``classes.txt``
    under ``out`` (28x28 grayscale JPEGs). Idempotent: an existing complete set is kept."""
    out = Path(out)
    if (out / "sample_submission.csv").is_file():
        return out
    tr_img, tr_lab = source / "train-images-idx3-ubyte.gz", source / "train-labels-idx1-ubyte.gz"
    te_img = source / "t10k-images-idx3-ubyte.gz"
    if not tr_img.is_file():
        raise FileNotFoundError(
            f"{tr_img} not found: install Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist` "
            "(or point data.root at your own HW13-layout folder)")
    images, labels = read_idx(tr_img), read_idx(tr_lab)
    test_images = read_idx(te_img)
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("training", "validation", "evaluation"):
        (tmp / sub).mkdir(parents=True)
    for c in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == c))[: per_class + val_per_class]
        for n, i in enumerate(idx):
            split = "training" if n < per_class else "validation"
            Image.fromarray(images[i], "L").save(tmp / split / f"{c}_{n}.jpg", quality=95)
    ev = rng.permutation(len(test_images))[:n_eval]
    for n, i in enumerate(ev):
        Image.fromarray(test_images[i], "L").save(tmp / "evaluation" / f"{n:04d}.jpg", quality=95)
    write_text(tmp / "sample_submission.csv", "Id,Category\n" + "".join(f"{n:04d},0\n" for n in range(n_eval)))
    write_text(tmp / "classes.txt", "\n".join(CLASSES) + "\n")
    write_text(tmp / "README.md", "Fashion-MNIST (Zalando, MIT licence) in the HW13 layout, built by "
               "`distil demo-data`. Evaluation labels are withheld as on Kaggle.\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_idx_folders(source: Path, out: Path) -> Path:
    """Write an IDX set (MNIST's four ``*-idx*-ubyte[.gz]`` files in ``source``) as class folders under ``out``:
    ``train/<digit>/<n>.png`` (the training set) and ``val/<digit>/<n>.png`` (the official test set), lossless
    PNG. Built beside, then moved into place; an existing complete set is kept."""
    source, out = Path(source), Path(out)
    if (out / "DONE").is_file():
        return out

    def find(stem: str) -> Path:
        for name in (f"{stem}.gz", stem):
            if (source / name).is_file():
                return source / name
        raise FileNotFoundError(f"{source / stem}[.gz] not found: point --source at a folder with MNIST's IDX files "
                                "(train-images-idx3-ubyte.gz, ...), e.g. ../shared/datasets/mnist")

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images, labels = read_idx(find(f"{prefix}-images-idx3-ubyte")), read_idx(find(f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise ValueError(f"{source}: {prefix} has {len(images)} images but {len(labels)} labels")
        for c in np.unique(labels):
            (tmp / split / str(int(c))).mkdir(parents=True)
        for n, (img, c) in enumerate(zip(images, labels)):
            Image.fromarray(img, "L").save(tmp / split / str(int(c)) / f"{n:05d}.png")
    write_text(tmp / "README.md", f"Class folders built by `distil idx-data` from the IDX files in {source}.\n")
    write_text(tmp / "DONE", "")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
