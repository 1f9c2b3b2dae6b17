"""The teacher cache: the frozen teacher's outputs for every training view, computed once.

Folder ``runs/<name>/cache/``::

    views.npy     (N, K, 5) int32   crop box + flip of each view (view 0 = whole image)
    logits.npy    (N, K, C) float32 teacher logits per view
    feat.npy      (N, K, D) float16 pooled features      (only if a configured loss needs feat_t)
    map.npy       (N, K, c, h, w) float16 feature map    (only if a loss needs map_t)
    val_logits.npy (M, C) float32   whole validation images
    manifest.json  the key: teacher sha256, files, transform, versions, shapes (written last)

A student run compares the manifest with what it expects and refuses a stale or partial cache.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from .atomic import atomic_path, sha256_json, write_json

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
FIELDS = ("logits", "feat", "map")
DTYPES = {"logits": np.float32, "feat": np.float16, "map": np.float16}  # storage type of each cached array


class StaleCacheError(RuntimeError):
    """The teacher cache does not match the current teacher, data or config."""


def cache_key(*, teacher_sha256: str, pixel_key: str, img_size: int, mean: Any, std: Any, views: int,
              scale_min: float, seed: int, unlabeled_key: Optional[str] = None) -> dict[str, Any]:
    """Everything a cache's values depend on; a student expects exactly this dict in the manifest.
    ``unlabeled_key`` (pixel key of unlabelled images appended to the training rows) is absent without them."""
    key = {
        "format": FORMAT_VERSION, "teacher_sha256": teacher_sha256, "pixel_key": pixel_key,
        "transform": {"img_size": img_size, "mean": list(mean), "std": list(std), "views": views,
                      "scale_min": scale_min, "seed": seed},
    }
    if unlabeled_key is not None:
        key["unlabeled_key"] = unlabeled_key
    return key


def content_problem(man: dict[str, Any], need: dict[str, Any]) -> Optional[str]:
    """Why the cache's contents do not cover ``need`` (``{"stored": [...], "feature_layer": L}``), or None.

    A cache holding more than needed (e.g. features built for another method) is fine."""
    have = man.get("contents", {})
    missing = sorted(set(need["stored"]) - set(have.get("stored", [])))
    if missing:
        return f"it does not hold {', '.join(missing)} (holds {', '.join(have.get('stored', []))})"
    if "map" in need["stored"] and have.get("feature_layer") != need["feature_layer"]:
        return f"its feature map is from layer {have.get('feature_layer')}, the config asks for {need['feature_layer']}"
    return None


@contextmanager
def write_array(path: Path, shape: tuple[int, ...], dtype: Any) -> Iterator[np.ndarray]:
    """Yield an ``.npy`` memmap to fill; it is moved into place atomically when the block succeeds."""
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield arr
        arr.flush()
        del arr


@dataclass
class TeacherCache:
    folder: Path
    manifest: dict[str, Any]
    views: np.ndarray
    logits: np.ndarray
    feat: Optional[np.ndarray]
    map: Optional[np.ndarray]
    val_logits: Optional[np.ndarray]

    def lookup(self, idx: torch.Tensor, view: torch.Tensor, name: str) -> torch.Tensor:
        """Rows ``(idx[b], view[b])`` of array ``name`` as a float32 tensor: (B, ...)."""
        arr = getattr(self, name)
        return torch.from_numpy(np.asarray(arr[idx.numpy(), view.numpy()], dtype=np.float32))


def _check_files(folder: Path, man: dict[str, Any]) -> Optional[str]:
    for name, shape in man.get("shapes", {}).items():
        p = folder / f"{name}.npy"
        if not p.is_file():
            return f"{p} is missing"
        try:
            arr = np.load(p, mmap_mode="r")
        except ValueError as exc:
            return f"{p} is unreadable ({exc})"
        if list(arr.shape) != list(shape):
            return f"{p} has shape {list(arr.shape)}, manifest says {shape}"
    return None


def read_manifest(folder: Path) -> Optional[dict[str, Any]]:
    p = folder / "manifest.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None


def key_diffs(key: dict[str, Any], have: dict[str, Any]) -> list[str]:
    """Key fields where a cache's ``have`` does not serve ``key``. A cache that also holds unlabelled
    images serves a student without them: its training rows (and their views) come first, unchanged."""
    diffs = [k for k in sorted(set(key) | set(have)) if key.get(k) != have.get(k)]
    return [k for k in diffs if not (k == "unlabeled_key" and k not in key)]


def is_valid(folder: Path, key: dict[str, Any], need: dict[str, Any]) -> bool:
    man = read_manifest(folder)
    return (man is not None and not key_diffs(key, man.get("key", {})) and content_problem(man, need) is None
            and _check_files(folder, man) is None)


def load_cache(folder: Path, key: dict[str, Any], need: dict[str, Any], rebuild_cmd: str) -> TeacherCache:
    """Open the cache in ``folder`` if its manifest matches ``key`` and covers ``need``; else raise ``StaleCacheError``."""
    man = read_manifest(folder)
    how = f"Rebuild it with: {rebuild_cmd}"
    if man is None:
        raise StaleCacheError(f"no teacher cache at {folder} (or its manifest.json is unreadable). {how}")
    have = man.get("key", {})
    diffs = key_diffs(key, have)
    if diffs:
        detail = "; ".join(f"{k}: cache has {str(have.get(k))[:40]!s}, expected {str(key.get(k))[:40]!s}" for k in diffs)
        raise StaleCacheError(f"teacher cache {folder} is stale ({detail}). {how}")
    lacking = content_problem(man, need)
    if lacking:
        raise StaleCacheError(f"teacher cache {folder} does not fit the configured losses: {lacking}. {how}")
    problem = _check_files(folder, man)
    if problem:
        raise StaleCacheError(f"teacher cache {folder} is incomplete: {problem}. {how}")

    def opt(name: str) -> Optional[np.ndarray]:
        p = folder / f"{name}.npy"
        return np.load(p, mmap_mode="r") if p.is_file() and name in man["shapes"] else None

    return TeacherCache(folder, man, np.load(folder / "views.npy"), np.load(folder / "logits.npy", mmap_mode="r"),
                        opt("feat"), opt("map"), opt("val_logits"))


def manifest_extra() -> dict[str, Any]:
    import timm

    return {"versions": {"torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}}


def key_digest(key: dict[str, Any]) -> str:
    return sha256_json(key)


def write_manifest(folder: Path, key: dict[str, Any], contents: dict[str, Any], shapes: dict[str, list[int]],
                   files: list[str], extra: dict[str, Any]) -> None:
    write_json(folder / "manifest.json", {"key": key, "digest": key_digest(key), "contents": contents, "shapes": shapes,
                                          "files": files, **manifest_extra(), **extra})
