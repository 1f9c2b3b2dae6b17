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


def load_weights(model: nn.Module, folder: Path, stem: str, how: str) -> nn.Module:
    """Load ``folder/<stem>.safetensors`` into ``model`` (every tensor must fit)."""
    path = Path(folder) / f"{stem}.safetensors"
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
