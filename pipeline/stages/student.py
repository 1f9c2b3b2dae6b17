"""``student`` stage: distil the teacher into a budgeted student, from the cache (or online)."""
from __future__ import annotations

import time
from typing import Any

import torch

from . import STAGES, build_engine
from ..config import Config
from ..data import distill_set, open_data, pixels
from ..data.evaluation import check_evaluation
from ..data.datasets import Normalize, PlainImages, ViewImages, loader
from ..engine import device
from ..optim import optimization
from ..fields import spec_dims
from ..losses.criterion import Criterion
from ..losses.terms import bind_terms, teacher_specs
from ..models import check_budget, check_count, create_student, predicted_params, save_artifact
from ..precision import resolve
from ..provenance import pending
from ..rundir import RunDir
from ..tasks import Distiller
from ..teachers import open_teacher

STUDENT_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


# the config sections that decide what this stage computes (its checkpoint's identity)
IDENTITY = ("data", "teacher", "cache", "student", "seed")


@STAGES.register("student", order=3, pipeline=True, help="distil the teacher into a student under the parameter budget")
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    t0 = time.time()
    sc = cfg.student
    terms = bind_terms(cfg)
    uses_teacher = any(t.uses_teacher for t in terms)
    layout = open_data(cfg)
    check_evaluation(layout, cfg.data.skip_bad)  # what submit would refuse is refused before training
    counted = predicted_params(sc.model, layout.num_classes, sc.kwargs)
    if counted is not None:  # a family with an analytic count is gated before it is built
        check_count(counted, sc.budget, f"student {sc.model!r}")
    student = create_student(sc.model, layout.num_classes, sc.img_size, **sc.kwargs)
    params = check_budget(student, sc.budget, f"student {sc.model!r}", sc.img_size)  # the gate: before any training
    train, val = pixels(cfg, layout, "train"), pixels(cfg, layout, "val")
    dev = device()
    # unlabelled images carry only teacher targets: a student without teacher terms trains on the labelled ones
    images = distill_set(cfg, layout, train, cfg.cache.unlabeled and uses_teacher)
    if uses_teacher:  # the teacher (and the cache) it reads: finished, not being written, current
        rd.require(*cfg.teacher_dirs, *([cfg.run_dir / "cache"] if sc.teacher_mode == "cached" else []),
                   today={"train images": train.key, "validation images": val.key})
    # every teacher output the terms read, from the cache or the teacher run online: one object
    teacher = open_teacher(cfg, teacher_specs(cfg, terms) if uses_teacher else [], images, dev, rd.teacher_command(),
                           rd.command("cache"))
    norm = (sc.mean, sc.std) if sc.mean else STUDENT_NORM
    student_dims = spec_dims(student, sc.img_size, {s for t in terms for s in t.specs("s")})
    distiller = Distiller(student, Criterion(terms, student_dims, teacher.dims, sc.adapters), Normalize(*norm), teacher)
    distiller.to(dev)
    if sc.channels_last:
        distiller.to(memory_format=torch.channels_last)
    out = rd.stage(sc.dir, save_config=False)  # the engine writes it once the checkpoint is accepted

    ds = ViewImages(images.pixels, images.labels, teacher.views, sc.img_size, seed=cfg.seed, teacher=teacher,
                    mixes=teacher.mixes, fresh=sc.view_sampling == "fresh")
    train_dl = loader(ds, sc.batch_size, shuffle=True, workers=cfg.data.workers, seed=cfg.seed,
                      drop_last=len(ds) > sc.batch_size)
    val_dl = loader(PlainImages(val.pixels, val.split.labels, sc.img_size), sc.batch_size * 2, shuffle=False,
                    workers=cfg.data.workers, shard=True)
    trainable = [p for p in distiller.parameters() if p.requires_grad]
    opt, sched = optimization(sc, iter(trainable), len(train_dl))
    meta = {"kind": "student", "arch": sc.model, "kwargs": dict(sc.kwargs), "num_classes": layout.num_classes,
            "class_names": layout.class_names, "img_size": sc.img_size, "pixel_size": cfg.data.image_size,
            "mean": list(norm[0]),
            "std": list(norm[1]), "params": params, "budget": sc.budget}

    def on_best(row: dict[str, Any]) -> None:
        save_artifact(pending(out), "student", student, {**meta, "val_acc": row["val_acc"], "epoch": row["epoch"]})

    inputs = {"train images": images.pixel_key, "validation images": val.key}
    if images.unlabeled_key:
        inputs["unlabelled images"] = images.unlabeled_key
    if teacher.key is not None:
        inputs["teacher"] = teacher.key
    precision = resolve(sc.amp, dev, "student")
    engine = build_engine(cfg, rd, "student", out, distiller, train_dl, val_dl, opt, sched, precision, IDENTITY, on_best,
                          inputs)
    history = engine.fit()
    result = {"name": sc.model, "params": params, "budget": sc.budget, "val_acc": max(h["val_acc"] for h in history),
              "val_images": len(val.split.labels),
              "losses": [t.model_dump() for t in sc.effective_losses()], "teacher_mode": sc.teacher_mode if uses_teacher else "none",
              "epochs": len(history), "precision": precision.name,
              "train_s": round(sum(h["epoch_s"] for h in history), 1), "wall_s": round(time.time() - t0, 1),
              "artifact": rd.relative(out / "student.safetensors")}
    upstream = ([cfg.run_dir / "cache"] if sc.teacher_mode == "cached" else cfg.teacher_dirs) if uses_teacher else []
    return rd.finish(out, "student" if sc.dir == "student" else f"student:{sc.dir}", result, trained=engine.epochs_run > 0,
                     kind="student", inputs=inputs, upstream=upstream)
