"""``cache`` stage: run the frozen teacher once over K recorded views of every training image
(and of the unlabelled evaluation images with ``cache.unlabeled``)."""
from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from . import STAGES
from .. import distributed
from .. import teacher_cache as tcache
from ..atomic import remove_stale_temps, save_npy
from ..config import Config
from ..data import distill_set, open_data, pixels
from ..data.datasets import Normalize, PlainImages, ViewImages, loader
from ..engine import device
from ..fields import field, forward_fields
from ..models import load_teacher
from ..precision import resolve
from ..predict import accuracy, predict_logits
from ..progress import progress
from ..rundir import RunDir


@STAGES.register("cache", order=2, pipeline=True, help="run the frozen teacher once over K recorded views per image")
@torch.inference_mode()
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    t0 = time.time()
    layout = open_data(cfg)
    train, val = pixels(cfg, layout, "train"), pixels(cfg, layout, "val")
    images = distill_set(cfg, layout, train, cfg.cache.unlabeled)
    how = f"run the teacher stage: {rd.teacher_command()}"
    key = tcache.expected_key(cfg, images.pixel_key, images.unlabeled_key, rd.teacher_command())
    need = tcache.needed(cfg, build=True)
    out = rd.stage("cache")
    if not rd.force and tcache.is_valid(out, key, need):
        return rd.finish(out, None, {"reused": True, "folder": rd.relative(out), "wall_s": round(time.time() - t0, 1)})
    if distributed.is_main():
        (out / "manifest.json").unlink(missing_ok=True)  # invalidate first: a crash below leaves no trusted cache
        remove_stale_temps(out)  # partial arrays of a run that was killed
        for d in out.glob(".shard*"):
            shutil.rmtree(d, ignore_errors=True)
    distributed.barrier()
    dev = device()
    model, meta = load_teacher(cfg.teacher_dir, how)
    model.to(dev)
    if cfg.teacher.channels_last:
        model.to(memory_format=torch.channels_last)
    precision = resolve(cfg.teacher.amp, dev)
    norm = Normalize(meta["mean"], meta["std"]).to(dev)
    size = int(meta["img_size"])
    fields, layer = need["stored"], need["feature_layer"]
    n, k, bs = len(images), cfg.cache.views, cfg.cache.batch_size
    views = tcache.views_for(cfg, n)

    def teacher(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with precision.autocast():
            return forward_fields(model, norm(x.to(dev, non_blocking=True)), fields, layer)

    probe = teacher(torch.from_numpy(np.stack([np.zeros((size, size, 3), np.uint8)])))
    shapes = {f: (n, k, *probe[f].shape[1:]) for f in fields}

    # rank r computes images r, r + world, ...; with one process its arrays are the cache itself
    r, w = distributed.rank(), distributed.world()
    mine = np.arange(r, n, w)
    part = out if w == 1 else out / f".shard{r}"
    with ExitStack() as stack:
        arrays = {f: stack.enter_context(tcache.write_array(part / f"{f}.npy", (len(mine), *s[1:]), field(f).dtype))
                  for f, s in shapes.items()}
        for v in range(k):
            ds = Subset(ViewImages(images.pixels, images.labels, views, size, fixed_view=v), mine.tolist())
            for batch in progress(loader(ds, bs, shuffle=False, workers=cfg.data.workers), f"cache view {v + 1}/{k}"):
                rows = batch["index"].numpy() // w  # row in this rank's part
                for f, t in teacher(batch["image"]).items():
                    arrays[f][rows, v] = t.float().cpu().numpy()
    if w > 1:
        distributed.barrier()
        if distributed.is_main():
            _gather_parts(out, shapes, w)
    result: dict[str, Any] = {"reused": False, "folder": rd.relative(out), "images": n,
                              "unlabeled": int((images.labels < 0).sum()), "views": k, "stored": fields,
                              "processes": w, "precision": precision.name}
    if distributed.is_main():
        save_npy(out / "views.npy", views)
        vdl = loader(PlainImages(val.pixels, val.split.labels, size), bs, shuffle=False, workers=cfg.data.workers)
        with precision.autocast():
            val_logits = predict_logits(model, vdl, norm, dev)
        save_npy(out / "val_logits.npy", val_logits)
        all_shapes = {**{f: list(s) for f, s in shapes.items()}, "views": list(views.shape), "val_logits": list(val_logits.shape)}
        result["teacher_val_acc"] = accuracy(val_logits, val.split.labels)
        tcache.write_manifest(out, key, need, all_shapes, images.files,
                              {"teacher": meta["arch"], "teacher_val_acc": result["teacher_val_acc"]})
    result["wall_s"] = round(time.time() - t0, 1)
    rd.finish(out, "cache", result)
    distributed.barrier()
    return result


def _gather_parts(out: Path, shapes: dict[str, tuple[int, ...]], w: int) -> None:
    """Interleave the ranks' parts (rank r holds rows r, r + w, ...) into the cache arrays."""
    for f, shape in shapes.items():
        with tcache.write_array(out / f"{f}.npy", shape, field(f).dtype) as dst:
            for r in range(w):
                dst[r::w] = np.load(out / f".shard{r}" / f"{f}.npy", mmap_mode="r")
    for r in range(w):
        shutil.rmtree(out / f".shard{r}", ignore_errors=True)
