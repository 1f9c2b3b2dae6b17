"""``cache`` stage: run the frozen teacher once over K recorded views of every training image
(and of the unlabelled evaluation images with ``cache.unlabeled``)."""
from __future__ import annotations

import shutil
from contextlib import nullcontext
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Subset

from .. import context as ctx
from .. import dist
from .. import teacher_cache as tcache
from ..atomic import remove_stale_temps, save_npy, sha256_file
from ..config import Config
from ..data.datasets import Normalize, PlainImages, ViewImages, loader
from ..data.views import sample_views
from ..distill import teacher_fields
from ..engine import device
from ..losses import loss_inputs
from ..models.teacher import teacher_from_checkpoint, teacher_outputs
from ..predict import accuracy, predict_logits
from ..progress import progress


def needed(cfg: Config, build: bool = False) -> dict[str, Any]:
    """Cache arrays the configured student losses read (logits always), plus ``cache.store`` when building."""
    needs: set[str] = set()
    for t in cfg.student.effective_losses():
        needs |= loss_inputs(t.name)
    fields = set(teacher_fields(needs)) | (set(cfg.cache.store) if build else set())
    return {"stored": sorted(fields), "feature_layer": cfg.cache.feature_layer if "map" in fields else None}


def expected_key(cfg: Config, pixel_key: str, unlabeled_key: Optional[str] = None) -> dict[str, Any]:
    """The manifest key the cache of ``cfg`` must carry (raises if the teacher is not trained)."""
    ck = cfg.teacher_dir / "best.pt"
    if not ck.is_file():
        from ..models.teacher import TeacherError

        raise TeacherError(f"no teacher checkpoint at {ck}; run the teacher stage first (make teacher CONFIG=...)")
    meta = torch.load(ck, map_location="cpu", weights_only=False)
    return tcache.cache_key(
        teacher_sha256=sha256_file(ck), pixel_key=pixel_key, img_size=cfg.teacher.img_size,
        mean=meta["mean"], std=meta["std"], views=cfg.cache.views, scale_min=cfg.cache.scale_min, seed=cfg.seed,
        unlabeled_key=unlabeled_key)


def views_for(cfg: Config, n: int) -> np.ndarray:
    """The (N, K, 5) views of the N distillation images: the same for the cache and an online teacher
    (rows are drawn in order, so the training images' views do not change when unlabelled ones follow)."""
    return sample_views(n, cfg.cache.views, cfg.data.image_size, cfg.cache.scale_min, np.random.default_rng((cfg.seed, 11)))


@torch.inference_mode()
def run(cfg: Config, config_path: Optional[str] = None) -> dict[str, Any]:
    t0 = time.time()
    out = ctx.stage_dir(cfg, "cache")
    layout = ctx.open_data(cfg)
    train, val = ctx.pixels(cfg, layout, "train"), ctx.pixels(cfg, layout, "val")
    images = ctx.distill_set(cfg, layout, train)
    key, need = expected_key(cfg, images.pixel_key, images.unlabeled_key), needed(cfg, build=True)
    if tcache.is_valid(out, key, need):
        return ctx.finish(cfg, out, None, {"reused": True, "folder": str(out), "wall_s": round(time.time() - t0, 1)})
    if dist.is_main():
        (out / "manifest.json").unlink(missing_ok=True)  # invalidate first: a crash below leaves no trusted cache
        remove_stale_temps(out)  # partial arrays of a run that was killed
        for d in out.glob(".shard*"):
            shutil.rmtree(d, ignore_errors=True)
    dist.barrier()
    dev = device()
    model, meta = teacher_from_checkpoint(cfg.teacher_dir / "best.pt")
    model.to(dev)
    norm = Normalize(meta["mean"], meta["std"]).to(dev)
    fields, layer = need["stored"], need["feature_layer"]
    n, k, bs = len(images), cfg.cache.views, cfg.cache.batch_size
    views = views_for(cfg, n)
    shapes = _shapes(model, norm, images.pixels, meta["img_size"], layer, n, k, fields, dev)

    # rank r computes images r, r + world, ...; with one process its arrays are the cache itself
    r, w = dist.rank(), dist.world()
    mine = np.arange(r, n, w)
    part = out if w == 1 else out / f".shard{r}"
    local = {f: (len(mine), *s[1:]) for f, s in shapes.items()}
    def array(name: str) -> Any:  # the part's array for ``name``, or None when it is not stored
        return tcache.write_array(part / f"{name}.npy", local[name], tcache.DTYPES[name]) if name in local else nullcontext()

    with array("logits") as logits, array("feat") as feat, array("map") as fmap:
        for v in range(k):
            ds = Subset(ViewImages(images.pixels, images.labels, views, meta["img_size"], fixed_view=v), mine.tolist())
            dl = loader(ds, bs, shuffle=False, workers=cfg.data.workers)
            for x, _, idx, _ in progress(dl, f"cache view {v + 1}/{k}"):
                lo, fe, ma = teacher_outputs(model, norm(x.to(dev)), layer)
                i = idx.numpy() // w  # row in this rank's part
                logits[i, v] = lo.float().cpu().numpy()
                if feat is not None:
                    feat[i, v] = fe.cpu().numpy()
                if fmap is not None and ma is not None:
                    fmap[i, v] = ma.cpu().numpy()
    if w > 1:
        dist.barrier()
        if dist.is_main():
            _gather_parts(out, shapes, w)
    result: dict[str, Any] = {"reused": False, "folder": str(out), "images": n,
                              "unlabeled": int((images.labels < 0).sum()), "views": k, "stored": fields, "processes": w}
    if dist.is_main():
        save_npy(out / "views.npy", views)
        vdl = loader(PlainImages(val.pixels, val.split.labels, meta["img_size"]), bs, shuffle=False, workers=cfg.data.workers)
        val_logits = predict_logits(model, vdl, norm, dev)
        save_npy(out / "val_logits.npy", val_logits)
        all_shapes = {**{f: list(s) for f, s in shapes.items()}, "views": list(views.shape), "val_logits": list(val_logits.shape)}
        result["teacher_val_acc"] = accuracy(val_logits, val.split.labels)
        tcache.write_manifest(out, key, need, all_shapes, images.files,
                              {"teacher": meta["arch"], "teacher_val_acc": result["teacher_val_acc"]})
    result["wall_s"] = round(time.time() - t0, 1)
    ctx.finish(cfg, out, "cache", result)
    dist.barrier()
    return result


def _shapes(model: Any, norm: Any, pixels: np.ndarray, size: int, layer: Optional[int], n: int, k: int,
            fields: list[str], dev: torch.device) -> dict[str, tuple[int, ...]]:
    """Full cache array shapes, probed with one image."""
    probe = norm(torch.from_numpy(np.array(pixels[:1])).to(dev))
    probe = torch.nn.functional.interpolate(probe, size=(size, size), mode="bilinear")
    pl, pf, pm = teacher_outputs(model, probe, layer)
    shapes = {"logits": (n, k, pl.shape[1]), "feat": (n, k, pf.shape[1])}
    if pm is not None:
        shapes["map"] = (n, k, *pm.shape[1:])
    return {f: s for f, s in shapes.items() if f in fields}


def _gather_parts(out: Path, shapes: dict[str, tuple[int, ...]], w: int) -> None:
    """Interleave the ranks' parts (rank r holds rows r, r + w, ...) into the cache arrays."""
    for f, shape in shapes.items():
        with tcache.write_array(out / f"{f}.npy", shape, tcache.DTYPES[f]) as dst:
            for r in range(w):
                dst[r::w] = np.load(out / f".shard{r}" / f"{f}.npy", mmap_mode="r")
    for r in range(w):
        shutil.rmtree(out / f".shard{r}", ignore_errors=True)
