"""The teacher cache: the frozen teacher's outputs for every recorded view, computed once, keyed so
that a stale cache is refused. This module is the only code that knows its files.

Folder ``runs/<name>/cache/``::

    views.npy       (N, K, 5) int32   crop box + flip of each view (view 0 = whole image)
    mixes.npy       (N, K, 7) float32 with ``cache.mix``: partner, partner view, lam, CutMix box of each view
    <spec>.npy      (N, K, ...)       one array per stored ``FieldSpec``, named by it (``logits``, ``feat``,
                                      ``map@3``): logits float32 (or ``cache.logits_dtype``), feat and maps float16
    val_logits.npy  (M, C) float32    whole validation images
    manifest.json   the key: teacher sha256, pixel keys, transform, versions, shapes (written last)

``CacheWriter`` builds it (the cache stage feeds it the teacher runner's outputs), ``load_cache`` reads it
back for the named specs (a student refuses a stale or partial cache), ``validation_logits`` serves the report.
"""
from __future__ import annotations

import json
import logging
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .atomic import atomic_path, remove_stale_temps, require_space, save_npy, sha256_file, sha256_json, write_json
from .differences import ABSENT, leaf_changes, shown
from .fields import FieldSpec

log = logging.getLogger(__name__)
FORMAT_VERSION = 3  # 3: arrays named by field spec (map@<layer>), contents list spec names


class StaleCacheError(RuntimeError):
    """The teacher cache does not match the current teacher, data or config."""


def recorded_views(cfg: Any, n: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The (N, K, 5) views of the N distillation images and their (N, K, 7) mix rows (None without ``cache.mix``):
    the same for the cache and an online teacher (rows are drawn in order, so the training images' views do not
    change when unlabelled ones follow)."""
    from .data.views import sample_mixes, sample_views

    views = sample_views(n, cfg.cache.views, cfg.data.image_size, cfg.cache.scale_min, np.random.default_rng((cfg.seed, 11)))
    if cfg.cache.mix == "none":
        return views, None
    return views, sample_mixes(views, cfg.cache.mix, cfg.cache.mix_prob, cfg.cache.mix_alpha,
                               np.random.default_rng((cfg.seed, 13)))


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


def content_problem(man: dict[str, Any], specs: list[FieldSpec]) -> Optional[str]:
    """Why the cache's contents do not cover ``specs``, or None. A cache holding more than needed (e.g. features
    built for another method, a map at another layer) is fine."""
    have = man.get("contents", {}).get("stored", [])
    missing = sorted({s.name for s in specs} - set(have))
    if missing:
        return f"it does not hold {', '.join(missing)} (holds {', '.join(have)})"
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
class CacheReader:
    """An opened cache: ``views`` (N, K, 5), ``arrays[spec name]`` (N, K, ...) memory-mapped."""

    folder: Path
    manifest: dict[str, Any]
    views: np.ndarray
    arrays: dict[str, np.ndarray]
    val_logits: Optional[np.ndarray]
    mixes: Optional[np.ndarray] = None

    def row(self, index: int, view: int) -> dict[str, np.ndarray]:
        """``{spec name: float32 array}`` of image ``index``, view ``view`` (runs in the data loader's workers)."""
        return {n: np.array(a[index, view], dtype=np.float32) for n, a in self.arrays.items()}

    def rows(self, index: np.ndarray, view: np.ndarray) -> dict[str, np.ndarray]:
        """``row`` for a batch: ``{spec name: float32 (B, ...)}`` of images ``index`` (B,), views ``view`` (B,), each
        output read from its memmap in one fancy-index, in file order (sorted), then put back in the batch's order."""
        index, view = np.asarray(index, np.int64), np.asarray(view, np.int64)
        order = np.lexsort((view, index))
        out = {}
        for n, a in self.arrays.items():
            got = np.asarray(a[index[order], view[order]], dtype=np.float32)
            out[n] = np.empty_like(got)
            out[n][order] = got
        return out


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


def is_valid(folder: Path, key: dict[str, Any], specs: list[FieldSpec]) -> bool:
    man = read_manifest(folder)
    return (man is not None and not key_diffs(key, man.get("key", {})) and content_problem(man, specs) is None
            and _check_files(folder, man) is None)


def load_cache(folder: Path, key: dict[str, Any], specs: list[FieldSpec], rebuild_cmd: str) -> CacheReader:
    """Open the cache in ``folder`` if its manifest matches ``key`` and holds ``specs``; else raise ``StaleCacheError``."""
    man = read_manifest(folder)
    how = f"Rebuild it with: {rebuild_cmd}"
    if man is None:
        raise StaleCacheError(f"no teacher cache at {folder} (or its manifest.json is unreadable). {how}")
    have = man.get("key", {})
    diffs = key_diffs(key, have)
    if diffs:
        detail = "; ".join(f"{name}: cache has {shown(old)}, config asks {shown(new)}"
                           for k in diffs for name, old, new in leaf_changes(have.get(k, ABSENT), key.get(k, ABSENT), k))
        raise StaleCacheError(f"teacher cache {folder} is stale ({detail}). {how}")
    lacking = content_problem(man, specs)
    if lacking:
        raise StaleCacheError(f"teacher cache {folder} does not fit the configured losses: {lacking}. {how}")
    problem = _check_files(folder, man)
    if problem:
        raise StaleCacheError(f"teacher cache {folder} is incomplete: {problem}. {how}")
    arrays = {sp.name: _open(folder / f"{sp.name}.npy") for sp in specs}
    val = folder / "val_logits.npy"
    return CacheReader(folder, man, np.load(folder / "views.npy"), arrays,
                        np.load(val) if val.is_file() and "val_logits" in man["shapes"] else None,
                        np.load(folder / "mixes.npy") if "mixes" in man["shapes"] else None)


def validation_logits(folder: Path) -> Optional[np.ndarray]:
    """The cached teacher's (M, C) logits on the whole validation images, or None when the cache has none."""
    man = read_manifest(folder)
    p = folder / "val_logits.npy"
    if man is None or "val_logits" not in man["shapes"] or not p.is_file():
        return None
    try:
        return np.load(p)
    except (ValueError, OSError, EOFError):
        return None


def plan(cfg: Any, folder: Path, images: Any, specs: list[FieldSpec], teacher_cmd: str, rank: int = 0,
         world: int = 1) -> "CacheWriter":
    """The writer of ``cfg``'s cache in ``folder`` for the distillation images ``images`` (a ``DistillSet``): its key
    (from the teacher's files and the data; ``teacher_cmd`` trains the teacher) and its recorded views."""
    key = expected_key(cfg, images.pixel_key, images.unlabeled_key, teacher_cmd)
    return CacheWriter(folder, key, specs, *recorded_views(cfg, len(images)), rank=rank, world=world)


class CacheWriter:
    """Builds the cache in ``folder``: the teacher outputs ``specs`` of ``views`` (N, K, 5) (and ``mixes``), keyed
    by ``key``. Rank ``r`` of ``world`` processes writes rows ``r, r + world, ...`` (``rows``) into its own part;
    ``finish`` (rank 0) gathers the parts and writes the views, validation logits and manifest (last)."""

    def __init__(self, folder: Path, key: dict[str, Any], specs: list[FieldSpec], views: np.ndarray,
                 mixes: Optional[np.ndarray], rank: int = 0, world: int = 1):
        self.folder, self.key, self.specs, self.views, self.mixes = folder, key, list(specs), views, mixes
        self.rank, self.world = rank, world
        self.rows = np.arange(rank, len(views), world)  # the images this rank computes
        self.part = folder if world == 1 else folder / f".shard{rank}"
        self.shapes: dict[str, tuple[int, ...]] = {}

    def is_built(self) -> bool:
        """A valid cache of this key holding these specs is there already."""
        return is_valid(self.folder, self.key, self.specs)

    def invalidate(self) -> None:
        """Before building (rank 0): remove the manifest first, so a crash below leaves no trusted cache, and what a
        killed build left (temporary arrays, parts)."""
        (self.folder / "manifest.json").unlink(missing_ok=True)
        remove_stale_temps(self.folder)
        for d in self.folder.glob(".shard*"):
            shutil.rmtree(d, ignore_errors=True)

    @contextmanager
    def arrays(self, item_shapes: dict[str, tuple[int, ...]]) -> Iterator[dict[str, np.ndarray]]:
        """This rank's ``{spec name: (len(rows), K, *shape)}`` memmaps to fill, moved into place when the block
        succeeds; ``item_shapes``: each spec's per-image shape (the runner's probe)."""
        n, k = self.views.shape[:2]
        self.shapes = {s.name: (n, k, *item_shapes[s.name]) for s in self.specs}
        # all of them at once, before any is created: each alone may fit while together they fill the disk
        # (a memmap on a full disk dies with a bus error, not an exception)
        sizes = {s.name: len(self.rows) * k * int(np.prod(item_shapes[s.name])) * np.dtype(s.storage).itemsize
                 for s in self.specs}
        require_space(self.part, sum(sizes.values()), "the cache's arrays (" + ", ".join(
            f"{name} {size / 2**20:,.0f} MB" for name, size in sizes.items()) + ")")
        with ExitStack() as stack:
            yield {s.name: stack.enter_context(write_array(self.part / f"{s.name}.npy", (len(self.rows), k, *item_shapes[s.name]),
                                                           s.storage)) for s in self.specs}

    def finish(self, val_logits: np.ndarray, files: list[str], extra: dict[str, Any]) -> None:
        """Rank 0, after every rank's ``arrays`` block: gather the parts, then views, mixes, validation logits (M, C)
        and the manifest (last: it makes the cache valid)."""
        if self.world > 1:
            for s in self.specs:
                with write_array(self.folder / f"{s.name}.npy", self.shapes[s.name], s.storage) as dst:
                    for r in range(self.world):
                        dst[r::self.world] = np.load(self.folder / f".shard{r}" / f"{s.name}.npy", mmap_mode="r")
            for r in range(self.world):
                shutil.rmtree(self.folder / f".shard{r}", ignore_errors=True)
        save_npy(self.folder / "views.npy", self.views)
        if self.mixes is not None:
            save_npy(self.folder / "mixes.npy", self.mixes)
        save_npy(self.folder / "val_logits.npy", val_logits)
        shapes = {**{n: list(s) for n, s in self.shapes.items()}, "views": list(self.views.shape),
                  "val_logits": list(val_logits.shape), **({"mixes": list(self.mixes.shape)} if self.mixes is not None else {})}
        contents = {"stored": [s.name for s in self.specs], "specs": {s.name: {"kind": s.kind, "layer": s.layer,
                                                                              "feat_from": s.feat_from} for s in self.specs}}
        write_manifest(self.folder, self.key, contents, shapes, files, extra)


def write_manifest(folder: Path, key: dict[str, Any], contents: dict[str, Any], shapes: dict[str, list[int]],
                   files: list[str], extra: dict[str, Any]) -> None:
    import timm
    import torch

    versions = {"torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}
    write_json(folder / "manifest.json", {"key": key, "digest": sha256_json(key), "contents": contents, "shapes": shapes,
                                          "files": files, "versions": versions, **extra})
