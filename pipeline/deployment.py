"""``distil predict``: the deployable student (``student.onnx`` when exported, else ``student.safetensors``) on a few
images or a folder, as a CSV of file, class, probability (``--topk`` adds the next classes)."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .data.datasets import Normalize, PlainImages, loader
from .data.images import load_square
from .data.layout import IMAGE_EXTS
from .data.pixels import BadImageError
from .models.artifacts import ArtifactError, read_meta
from .predict import predict_logits

log = logging.getLogger(__name__)


def _torch_model(folder: Path, meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    from .models import load_student

    return load_student(folder, int(meta.get("budget", meta["params"])), "train it with `distil student`")[0]


def _onnx_model(folder: Path, meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    from .export import ort_session

    sess = ort_session(folder / "student.onnx")
    return lambda x: torch.from_numpy(sess.run(["logits"], {"image": x.numpy()})[0])


# the deployable formats, by name: how each is loaded into a (B, 3, H, W) float -> (B, C) logits callable
FORMATS: dict[str, Callable[[Path, dict[str, Any]], Callable[[torch.Tensor], torch.Tensor]]] = {
    "safetensors": _torch_model, "onnx": _onnx_model}


def pick_format(folder: Path, fmt: str = "auto") -> str:
    """``onnx`` when ``student.onnx`` is there, no older than ``student.safetensors`` and onnxruntime is installed,
    else ``safetensors``; an explicit ``fmt`` is kept (a missing file is named when it loads)."""
    if fmt != "auto":
        return fmt
    onnx, st = folder / "student.onnx", folder / "student.safetensors"
    if not onnx.is_file():
        return "safetensors"
    if st.is_file() and onnx.stat().st_mtime < st.stat().st_mtime:
        log.warning("%s is older than %s (the student was trained again after the export): using the safetensors; "
                    "run `distil export` again to refresh the ONNX", onnx, st)
        return "safetensors"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "safetensors"
    return "onnx"


def image_files(items: Sequence[str | Path]) -> list[Path]:
    """Image files named or inside the named folders (recursively, sorted); a missing path or a folder without
    images raises ``FileNotFoundError`` naming it."""
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            if not found:
                raise FileNotFoundError(f"{item}: no image files inside ({', '.join(sorted(IMAGE_EXTS))})")
            out += found
        elif item.is_file():
            out.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image file or folder")
    return out


class DeployedStudent:
    """A run's deployable student folder (``student.json`` + ``student.safetensors``, maybe ``student.onnx``)."""

    def __init__(self, folder: str | Path, fmt: str = "auto"):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder, "student", "train it with `distil student` (or pass --student FOLDER)")
        self.format = pick_format(self.folder, fmt)
        if self.format not in FORMATS:
            raise ArtifactError(f"unknown student format {fmt!r}; known: auto, {', '.join(FORMATS)}")
        if self.format == "onnx" and not (self.folder / "student.onnx").is_file():
            raise ArtifactError(f"no {self.folder / 'student.onnx'}; run `distil export` first, or use --format safetensors")
        self.model = FORMATS[self.format](self.folder, self.meta)
        self.classes: list[str] = list(self.meta.get("class_names") or map(str, range(int(self.meta["num_classes"]))))
        self.img_size = int(self.meta["img_size"])
        # the side the run decoded its images to before resizing them for the student (older students: img_size)
        self.pixel_size = int(self.meta.get("pixel_size", self.img_size))

    def probabilities(self, files: Sequence[Path]) -> np.ndarray:
        """(N, C) float32 softmax probabilities of ``files``, decoded and resized as the run's images were."""
        pixels, bad = [], []
        for f in files:
            try:
                pixels.append(load_square(f, self.pixel_size))
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad image
                bad.append((f, f"{type(exc).__name__}: {exc}"))
        if bad:
            raise BadImageError(bad)
        dl = loader(PlainImages(np.stack(pixels), None, self.img_size), 64, shuffle=False)
        norm = Normalize(self.meta["mean"], self.meta["std"])
        logits = predict_logits(self.model, dl, norm, torch.device("cpu"), desc=None)
        return torch.softmax(torch.from_numpy(logits), 1).numpy()


def prediction_csv(files: Sequence[Path], probs: np.ndarray, classes: list[str], topk: int = 1) -> str:
    """CSV text: ``file,class,probability`` (the top class), then ``class_2,probability_2``... up to ``topk``."""
    k = max(1, min(topk, probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    head = ["file", "class", "probability"] + [f"{c}_{r}" for r in range(2, k + 1) for c in ("class", "probability")]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for f, row, p in zip(files, order, probs):
        w.writerow([str(f), *[x for c in row for x in (classes[c], f"{p[c]:.4f}")]])
    return buf.getvalue()


def predict_images(items: Sequence[str | Path], folder: str | Path, topk: int = 1, fmt: str = "auto",
                   out: Optional[Path] = None) -> str:
    """Label the images in ``items`` with the student in ``folder``; returns the CSV (also written to ``out``)."""
    from .atomic import write_text

    student = DeployedStudent(folder, fmt)
    files = image_files(items)
    log.info("predicting %d image(s) with %s (%s)", len(files), student.folder, student.format)
    text = prediction_csv(files, student.probabilities(files), student.classes, topk)
    if out is not None:
        write_text(out, text)
    return text
