"""The teacher cache: the frozen teacher's outputs for every recorded view, computed once, keyed so
that a stale cache is refused.

Folder ``runs/<name>/cache/``::

    views.npy       (N, K, 5) int32   crop box + flip of each view (view 0 = whole image)
    mixes.npy       (N, K, 7) float32 with ``cache.mix``: partner, partner view, lam, CutMix box of each view
    <field>.npy     (N, K, ...)       one array per stored field of ``pipeline.fields`` (logits float32,
                                      feat and map float16), only those a loss reads or ``cache.store`` asks for
    val_logits.npy  (M, C) float32    whole validation images
    manifest.json   the key: teacher sha256, pixel keys, transform, versions, shapes (written last)

A student run compares the manifest with the key it expects and refuses a stale or partial cache.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .atomic import atomic_path, require_space, sha256_file, sha256_json, write_json
from .fields import field
from .losses import teacher_fields

log = logging.getLogger(__name__)
FORMAT_VERSION = 2


class StaleCacheError(RuntimeError):
    """The teacher cache does not match the current teacher, data or config."""


def needed(cfg: Any, build: bool = False) -> dict[str, Any]:
    """Fields the configured losses read from the teacher (``logits`` always), plus ``cache.store`` when
    building: ``{"stored": [...], "feature_layer": L or None}``."""
    names = {"logits"}
    for t in cfg.student.effective_losses():
        names |= teacher_fields(t.name)
    if build:
        names |= set(cfg.cache.store)
    layered = any(field(n).needs_layer for n in names)
    need = {"stored": sorted(names), "feature_layer": cfg.cache.feature_layer if layered else None}
    if "feat" in names and cfg.cache.feat_from != "pre_logits":
        need["feat_from"] = cfg.cache.feat_from
    return need


def views_for(cfg: Any, n: int) -> np.ndarray:
    """The (N, K, 5) views of the N distillation images: the same for the cache and an online teacher
    (rows are drawn in order, so the training images' views do not change when unlabelled ones follow)."""
    from .data.views import sample_views

    return sample_views(n, cfg.cache.views, cfg.data.image_size, cfg.cache.scale_min, np.random.default_rng((cfg.seed, 11)))


def mixes_for(cfg: Any, views: np.ndarray) -> Optional[np.ndarray]:
    """The (N, K, 7) mix rows of the views (``cache.mix``), or None when views are not mixed."""
    from .data.views import sample_mixes

    if cfg.cache.mix == "none":
        return None
    return sample_mixes(views, cfg.cache.mix, cfg.cache.mix_prob, cfg.cache.mix_alpha,
                        np.random.default_rng((cfg.seed, 13)))


def field_dtype(cfg: Any, name: str) -> Any:
    """Storage dtype of cached field ``name``: the field's own, or ``cache.logits_dtype`` for logits."""
    return np.dtype(cfg.cache.logits_dtype) if name == "logits" else np.dtype(field(name).dtype)


def cache_key(*, teacher_sha256: str, pixel_key: str, img_size: int, mean: Any, std: Any, views: int,
              scale_min: float, seed: int, unlabeled_key: Optional[str] = None,
              mix: Optional[dict[str, Any]] = None, logits_dtype: str = "float32") -> dict[str, Any]:
    """Everything a cache's values depend on; a student expects exactly this dict in the manifest. With one
    view (the whole image) the seed and crop scale change nothing, so they are left out (seeds share a cache).
    ``unlabeled_key`` (pixel key of unlabelled images appended to the training rows) is absent without them."""
    key = {
        "format": FORMAT_VERSION, "teacher_sha256": teacher_sha256, "pixel_key": pixel_key,
        "transform": {"img_size": img_size, "mean": list(mean), "std": list(std), "views": views,
                      "scale_min": scale_min if views > 1 else None, "seed": seed if views > 1 else None},
    }
    if unlabeled_key is not None:
        key["unlabeled_key"] = unlabeled_key
    if mix is not None:
        key["transform"]["mix"] = mix
    if logits_dtype != "float32":
        key["logits_dtype"] = logits_dtype
    return key


def expected_key(cfg: Any, pixel_key: str, unlabeled_key: Optional[str] = None,
                 teacher_cmd: str = "the teacher stage") -> dict[str, Any]:
    """The key the cache of ``cfg`` must carry: from the teacher's deployable files and the data.
    ``teacher_cmd`` (for messages) trains the teacher."""
    from .models.artifacts import read_meta

    folder = cfg.teacher_dir
    meta = read_meta(folder, "teacher", f"run the teacher stage: {teacher_cmd}")
    key = cache_key(teacher_sha256=sha256_file(folder / "teacher.safetensors"), pixel_key=pixel_key,
                    img_size=meta["img_size"], mean=meta["mean"], std=meta["std"], views=cfg.cache.views,
                    scale_min=cfg.cache.scale_min, seed=cfg.seed, unlabeled_key=unlabeled_key,
                    mix=None if cfg.cache.mix == "none" else
                    {"kind": cfg.cache.mix, "prob": cfg.cache.mix_prob, "alpha": cfg.cache.mix_alpha},
                    logits_dtype=cfg.cache.logits_dtype)
    members = []
    for run, other in zip(cfg.cache.ensemble, cfg.teacher_dirs[1:]):
        m = read_meta(other, "teacher", f"train it: distil teacher --config configs/{run}.yaml (cache.ensemble "
                                        f"names run {run!r})")
        members.append({"run": run, "teacher_sha256": sha256_file(other / "teacher.safetensors"),
                        "img_size": m["img_size"], "mean": list(m["mean"]), "std": list(m["std"])})
    if members:
        key["ensemble"] = members
    return key


def teachers_sha256(cfg: Any) -> str:
    """Content key of the cached teacher: its file's sha256, or of all the ensemble's files together."""
    shas = [sha256_file(d / "teacher.safetensors") for d in cfg.teacher_dirs]
    return shas[0] if len(shas) == 1 else sha256_json(shas)


def content_problem(man: dict[str, Any], need: dict[str, Any]) -> Optional[str]:
    """Why the cache's contents do not cover ``need`` (``{"stored": [...], "feature_layer": L}``), or None.

    A cache holding more than needed (e.g. features built for another method) is fine."""
    have = man.get("contents", {})
    missing = sorted(set(need["stored"]) - set(have.get("stored", [])))
    if missing:
        return f"it does not hold {', '.join(missing)} (holds {', '.join(have.get('stored', []))})"
    if need["feature_layer"] is not None and have.get("feature_layer") != need["feature_layer"]:
        return f"its feature map is from layer {have.get('feature_layer')}, the config asks for {need['feature_layer']}"
    if "feat" in need["stored"] and have.get("feat_from", "pre_logits") != need.get("feat_from", "pre_logits"):
        return (f"its feat is {have.get('feat_from', 'pre_logits')}, the config asks for "
                f"{need.get('feat_from', 'pre_logits')} (cache.feat_from)")
    return None


@contextmanager
def write_array(path: Path, shape: tuple[int, ...], dtype: Any) -> Iterator[np.ndarray]:
    """Yield an ``.npy`` memmap to fill; it is moved into place atomically when the block succeeds."""
    require_space(path.parent, int(np.prod(shape)) * np.dtype(dtype).itemsize, f"{path.name} {tuple(shape)}")
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield arr
        arr.flush()
        del arr


@dataclass
class TeacherCache:
    """An opened cache: ``views`` (N, K, 5), ``arrays[field]`` (N, K, ...) memory-mapped."""

    folder: Path
    manifest: dict[str, Any]
    views: np.ndarray
    arrays: dict[str, np.ndarray]
    val_logits: Optional[np.ndarray]
    mixes: Optional[np.ndarray] = None

    def lookup(self, index: int, view: int, names: Optional[list[str]] = None) -> dict[str, np.ndarray]:
        """``{"<field>_t": float32 array}`` of image ``index``, view ``view``."""
        return {f"{n}_t": np.array(self.arrays[n][index, view], dtype=np.float32) for n in (names or self.arrays)}


def _open(p: Path) -> np.ndarray:
    return np.load(p, mmap_mode="r")


def _check_files(folder: Path, man: dict[str, Any]) -> Optional[str]:
    for name, shape in man.get("shapes", {}).items():
        p = folder / f"{name}.npy"
        if not p.is_file():
            return f"{p} is missing"
        try:
            arr = _open(p)
        except (ValueError, OSError, EOFError) as exc:
            return f"{p} is unreadable ({type(exc).__name__}: {exc})"
        if list(arr.shape) != list(shape):
            return f"{p} has shape {list(arr.shape)}, manifest says {shape}"
    return None


def read_manifest(folder: Path) -> Optional[dict[str, Any]]:
    p = folder / "manifest.json"
    if not p.is_file():
        return None
    try:
        man = json.loads(p.read_text())
    except (ValueError, OSError):
        return None
    return man if isinstance(man, dict) and isinstance(man.get("shapes"), dict) else None


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
    arrays = {n: _open(folder / f"{n}.npy") for n in need["stored"]}
    val = folder / "val_logits.npy"
    return TeacherCache(folder, man, np.load(folder / "views.npy"), arrays,
                        np.load(val) if val.is_file() and "val_logits" in man["shapes"] else None,
                        np.load(folder / "mixes.npy") if "mixes" in man["shapes"] else None)


def write_manifest(folder: Path, key: dict[str, Any], contents: dict[str, Any], shapes: dict[str, list[int]],
                   files: list[str], extra: dict[str, Any]) -> None:
    import timm
    import torch

    versions = {"torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}
    write_json(folder / "manifest.json", {"key": key, "digest": sha256_json(key), "contents": contents, "shapes": shapes,
                                          "files": files, "versions": versions, **extra})
