"""``student`` stage: distil the teacher into a budgeted student, from the cache (or online)."""
from __future__ import annotations

import time
from typing import Any

import torch

from . import STAGES, build_engine
from .. import teacher_cache as tcache
from ..config import Config
from ..data import distill_set, open_data, pixels
from ..data.datasets import Normalize, PlainImages, ViewImages, loader
from ..engine import device
from ..optim import optimization
from ..fields import field_dims, fields_of
from ..losses import teacher_fields
from ..losses.criterion import Criterion, needs
from ..models import check_budget, create_student, save_artifact
from ..precision import resolve
from ..rundir import RunDir
from ..tasks import Distiller
from ..teachers import CachedTeacher, OnlineTeacher

STUDENT_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


# the config sections that decide what this stage computes (its checkpoint's identity)
IDENTITY = ("data", "teacher", "cache", "student", "seed")


@STAGES.register("student", order=3, pipeline=True, help="distil the teacher into a student under the parameter budget")
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    t0 = time.time()
    sc = cfg.student
    terms = sc.effective_losses()
    uses_teacher = any(teacher_fields(t.name) for t in terms)
    layout = open_data(cfg)
    student = create_student(sc.model, layout.num_classes, sc.img_size, **sc.kwargs)
    params = check_budget(student, sc.budget, f"student {sc.model!r}", sc.img_size)  # the gate: before any training
    train, val = pixels(cfg, layout, "train"), pixels(cfg, layout, "val")
    dev = device()
    # unlabelled images carry only teacher targets: a student without teacher terms trains on the labelled ones
    images = distill_set(cfg, layout, train, cfg.cache.unlabeled and uses_teacher)
    teacher_need = tcache.needed(cfg)  # the fields the losses read from the teacher (logits always)
    online = cached = None
    if uses_teacher and sc.teacher_mode == "online":
        online = OnlineTeacher(cfg.teacher_dir, teacher_need["stored"], teacher_need["feature_layer"],
                               f"run the teacher stage: {rd.teacher_command()}", {"feat": cfg.cache.feat_from})
        views, teacher_dims = tcache.views_for(cfg, len(images)), online.dims
        mixes = tcache.mixes_for(cfg, views)
    elif uses_teacher:
        key = tcache.expected_key(cfg, images.pixel_key, images.unlabeled_key, rd.teacher_command())
        cached = CachedTeacher(cfg.run_dir / "cache", key, teacher_need, rd.command("cache"))
        views, teacher_dims, mixes = cached.views, cached.dims, cached.mixes
    else:
        views, teacher_dims = tcache.views_for(cfg, len(images)), {}
        mixes = tcache.mixes_for(cfg, views)
    layer = sc.student_layer
    norm = (sc.mean, sc.std) if sc.mean else STUDENT_NORM
    options = {"feat": sc.feat_from}
    student_dims = field_dims(student, sc.img_size, fields_of(needs(terms), "s"), layer, options)
    distiller = Distiller(student, Criterion(terms, student_dims, teacher_dims, sc.adapters), Normalize(*norm), layer,
                          online, options)
    distiller.to(dev)
    if sc.channels_last:
        distiller.to(memory_format=torch.channels_last)
    out = rd.stage(sc.dir, save_config=False)  # the engine writes it once the checkpoint is accepted

    ds = ViewImages(images.pixels, images.labels, views, sc.img_size, seed=cfg.seed,
                    teacher_size=online.img_size if online else None, lookup=cached.lookup if cached else None,
                    mixes=mixes, fresh=sc.view_sampling == "fresh")
    train_dl = loader(ds, sc.batch_size, shuffle=True, workers=cfg.data.workers, seed=cfg.seed,
                      drop_last=len(ds) > sc.batch_size)
    val_dl = loader(PlainImages(val.pixels, val.split.labels, sc.img_size), sc.batch_size * 2, shuffle=False,
                    workers=cfg.data.workers, shard=True)
    trainable = [p for p in distiller.parameters() if p.requires_grad]
    opt, sched = optimization(sc, iter(trainable), len(train_dl))
    meta = {"kind": "student", "arch": sc.model, "kwargs": dict(sc.kwargs), "num_classes": layout.num_classes,
            "class_names": layout.class_names, "img_size": sc.img_size, "mean": list(norm[0]),
            "std": list(norm[1]), "params": params, "budget": sc.budget}

    def on_best(row: dict[str, Any]) -> None:
        save_artifact(out, "student", student, {**meta, "val_acc": row["val_acc"], "epoch": row["epoch"]})

    inputs = {"train images": images.pixel_key, "validation images": val.key}
    if images.unlabeled_key:
        inputs["unlabelled images"] = images.unlabeled_key
    if uses_teacher:
        inputs["teacher"] = tcache.teachers_sha256(cfg)
    precision = resolve(sc.amp, dev)
    engine = build_engine(cfg, rd, "student", out, distiller, train_dl, val_dl, opt, sched, precision, IDENTITY, on_best,
                          inputs)
    history = engine.fit()
    result = {"name": sc.model, "params": params, "budget": sc.budget, "val_acc": max(h["val_acc"] for h in history),
              "val_images": len(val.split.labels),
              "losses": [t.model_dump() for t in terms], "teacher_mode": sc.teacher_mode if uses_teacher else "none",
              "epochs": len(history), "precision": precision.name,
              "train_s": round(sum(h["epoch_s"] for h in history), 1), "wall_s": round(time.time() - t0, 1),
              "artifact": rd.relative(out / "student.safetensors")}
    return rd.finish(out, "student" if sc.dir == "student" else f"student:{sc.dir}", result, trained=engine.epochs_run > 0)
