"""Deployable models as files that cannot run code: ``<stem>.safetensors`` (weights) + ``<stem>.json``
(what to build: arch, kwargs, classes, normalisation, image size, parameter count).

Training state for resuming lives in ``last.pt`` (``pipeline.checkpoint``); submit, export and report
read only these two files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
import torch
from torch import nn

from ..atomic import write_json, write_with


class ArtifactError(RuntimeError):
    """A deployable model is missing, unreadable or does not fit its description."""


def save_artifact(folder: Path, stem: str, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``folder/<stem>.safetensors`` then ``folder/<stem>.json`` (both atomically); returns the weights path."""
    path = Path(folder) / f"{stem}.safetensors"
    write_with(path, lambda tmp: save_model(model, str(tmp), metadata={"arch": str(meta.get("arch", ""))}))
    write_json(Path(folder) / f"{stem}.json", meta)
    return path


def read_meta(folder: Path, stem: str, how: str) -> dict[str, Any]:
    """``folder/<stem>.json`` (and check that its weights exist); ``how`` says how to make them."""
    meta_p, weights = Path(folder) / f"{stem}.json", Path(folder) / f"{stem}.safetensors"
    if not meta_p.is_file() or not weights.is_file():
        raise ArtifactError(f"no {stem} at {folder} ({meta_p.name} + {weights.name}); {how}")
    try:
        meta = json.loads(meta_p.read_text())
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{meta_p} is unreadable ({exc}); {how}") from None
    if not isinstance(meta, dict) or meta.get("kind") != stem:
        raise ArtifactError(f"{meta_p} does not describe a {stem}; {how}")
    return meta


# safetensors' dtype codes: a file's header must give each tensor the dtype this pipeline wrote it in
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
           "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def check_header(model: nn.Module, path: Path, how: str) -> None:
    """Raise ``ArtifactError`` naming ``path`` and the tensor when the file's header gives a tensor of ``model``
    another dtype or shape (an altered header: loading would cast int32 bits to floats silently, e.g. to an
    all-NaN teacher). Reads the header only."""
    from safetensors import safe_open

    own = model.state_dict()
    try:
        with safe_open(str(path), "pt") as fh:
            for k in fh.keys():
                sl = fh.get_slice(k)
                dtype, shape = _DTYPES.get(sl.get_dtype(), sl.get_dtype()), list(sl.get_shape())
                if k in own and (dtype != own[k].dtype or shape != list(own[k].shape)):
                    raise ArtifactError(f"{path}: weights do not fit the model (tensor {k[:80]} is {dtype} {shape} in "
                                        f"the file, the model's is {own[k].dtype} {list(own[k].shape)}: the file was "
                                        f"altered or is another model's); {how}")
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path}: weights do not load ({type(exc).__name__}: {str(exc)[:300]}); {how}") from None


def load_weights(model: nn.Module, folder: Path, stem: str, how: str) -> nn.Module:
    """Load ``folder/<stem>.safetensors`` into ``model`` (every tensor must fit: dtype and shape as the model's)."""
    path = Path(folder) / f"{stem}.safetensors"
    check_header(model, path, how)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ArtifactError(f"{path}: weights do not load ({type(exc).__name__}: {str(exc)[:300]}); {how}") from None
    if missing or unexpected:
        raise ArtifactError(f"{path}: weights do not fit the model (missing {sorted(missing)[:3]}, "
                            f"unexpected {sorted(unexpected)[:3]}); {how}")
    return model


def load_student(folder: Path, budget: int, how: str = "run the student stage first") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the deployable student in ``folder`` and gate it again (the files may come from elsewhere).
    Returns ``(model in eval mode, meta)``."""
    from .budget import check_budget
    from .students import create_student

    meta = read_meta(folder, "student", how)
    try:
        model = create_student(meta["arch"], int(meta["num_classes"]), int(meta["img_size"]), **meta.get("kwargs", {}))
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{Path(folder) / 'student.json'}: cannot build the student ({exc}); {how}") from None
    load_weights(model, folder, "student", how)
    check_budget(model, budget, f"student {Path(folder) / 'student.safetensors'}", int(meta.get("img_size", 32)))
    return model.eval(), meta


def load_teacher(folder: Path, how: str = "run the teacher stage first") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the fine-tuned teacher in ``folder``, frozen (eval, no gradients). Returns ``(model, meta)``."""
    from .teacher import TeacherError, build_model, freeze

    meta = read_meta(folder, "teacher", how)
    try:
        model = build_model(meta["arch"], int(meta["num_classes"]), img_size=int(meta["img_size"]),
                            kwargs=meta.get("kwargs", {}))
    except (KeyError, RuntimeError, TypeError, TeacherError) as exc:
        raise ArtifactError(f"{Path(folder) / 'teacher.json'}: cannot build the teacher ({exc}); {how}") from None
    load_weights(model, folder, "teacher", how)
    return freeze(model), meta


def artifact_ok(folder: Path, stem: str) -> bool:
    """Whether ``folder/<stem>.{json,safetensors}`` are there and readable (header and sizes checked,
    no tensors loaded)."""
    from safetensors import safe_open

    try:
        read_meta(folder, stem, "")
        with safe_open(str(Path(folder) / f"{stem}.safetensors"), "pt") as f:
            f.keys()
    except (ArtifactError, SafetensorError, OSError):
        return False
    return True
