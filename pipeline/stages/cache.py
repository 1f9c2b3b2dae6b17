"""``cache`` stage: run the frozen teacher once over K recorded views of every training image
(and of the unlabelled evaluation images with ``cache.unlabeled``)."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from . import STAGES
from .. import distributed
from .. import teacher_cache
from ..config import Config
from ..data import distill_set, open_data, pixels
from ..data.datasets import PlainImages, ViewImages, loader
from ..engine import device
from ..losses.terms import teacher_specs
from ..precision import resolve
from ..predict import accuracy, predict_logits
from ..progress import progress
from ..rundir import RunDir
from ..teachers import TeacherRunner


@STAGES.register("cache", order=2, pipeline=True, help="run the frozen teacher once over K recorded views per image")
@torch.inference_mode()
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    t0 = time.time()
    layout = open_data(cfg)
    train, val = pixels(cfg, layout, "train"), pixels(cfg, layout, "val")
    images = distill_set(cfg, layout, train, cfg.cache.unlabeled)
    specs = teacher_specs(cfg, build=True)
    rd.require(*cfg.teacher_dirs, today={"train images": train.key, "validation images": val.key})
    out = rd.stage("cache")
    provenance = {"kind": "cache", "upstream": cfg.teacher_dirs,
                  "inputs": {"train images": images.pixel_key, "unlabelled images": images.unlabeled_key}}
    writer = teacher_cache.plan(cfg, out, images, specs, rd.teacher_command(), distributed.rank(), distributed.world())
    if not rd.force and writer.is_built():
        return rd.finish(out, None, {"reused": True, "folder": rd.relative(out), "wall_s": round(time.time() - t0, 1)},
                         trained=False, **provenance)
    if distributed.is_main():
        writer.invalidate()
    distributed.barrier()
    dev = device()
    precision = resolve(cfg.teacher.amp, dev, "cache")
    how = f"run the teacher stage: {rd.teacher_command()}"
    runners = [TeacherRunner(d, specs, how, dev, precision, cfg.teacher.channels_last, cfg.cache.backend)
               for d in cfg.teacher_dirs]
    k, bs, w = cfg.cache.views, cfg.cache.batch_size, distributed.world()
    with writer.arrays(runners[0].shapes()) as arrays:
        for j, runner in enumerate(runners):  # an ensemble's mean: each teacher sees the view at its own size
            for v in range(k):
                ds = Subset(ViewImages(images.pixels, images.labels, writer.views, runner.size, fixed_view=v,
                                       mixes=writer.mixes), writer.rows.tolist())
                what = f"cache view {v + 1}/{k}" + (f" teacher {j + 1}/{len(runners)}" if len(runners) > 1 else "")
                for batch in progress(loader(ds, bs, shuffle=False, workers=cfg.data.workers), what):
                    rows = batch["index"].numpy() // w  # row in this rank's part
                    for name, t in runner(batch["image"]).items():
                        y = t.float().cpu().numpy() / len(runners)
                        arrays[name][rows, v] = y if j == 0 else arrays[name][rows, v] + y
    distributed.barrier()
    result: dict[str, Any] = {"reused": False, "folder": rd.relative(out), "images": len(images),
                              "unlabeled": int((images.labels < 0).sum()), "views": k, "stored": [s.name for s in specs],
                              "processes": w, "precision": precision.name if cfg.cache.backend == "torch" else
                              f"{cfg.cache.backend} fp32"}
    if distributed.is_main():
        members = []
        for runner in runners:
            vdl = loader(PlainImages(val.pixels, val.split.labels, runner.size), bs, shuffle=False, workers=cfg.data.workers)
            members.append(predict_logits(runner.logits, vdl, runner.norm, dev))
        val_logits = np.mean(members, axis=0).astype(np.float32)
        result["teacher_val_acc"] = accuracy(val_logits, val.split.labels)
        extra: dict[str, Any] = {"teacher": runners[0].meta["arch"], "teacher_val_acc": result["teacher_val_acc"]}
        if len(runners) > 1:
            result["ensemble_val_acc"] = {str(rd.relative(r.folder)): accuracy(m, val.split.labels)
                                          for r, m in zip(runners, members)}
            extra["ensemble"] = [r.meta["arch"] for r in runners]
        writer.finish(val_logits, images.files, extra)
    result["wall_s"] = round(time.time() - t0, 1)
    rd.finish(out, "cache", result, **provenance)
    distributed.barrier()
    return result
