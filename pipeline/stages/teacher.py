"""``teacher`` stage: fine-tune a timm model on the task's images."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from . import STAGES, build_engine
from .. import distributed
from ..config import Config
from ..data import open_data, pixels
from ..data.evaluation import check_evaluation
from ..data.datasets import AugmentedImages, Normalize, PlainImages, loader
from ..engine import device
from ..optim import optimization
from ..models import count_params, save_artifact
from ..models.teacher import TeacherError, create_teacher, teacher_norm
from ..precision import resolve
from ..predict import accuracy, predict_logits
from ..provenance import pending
from ..rundir import RunDir
from ..tasks import Classification


# the config sections that decide what this stage computes (its checkpoint's identity)
IDENTITY = ("data", "teacher", "seed")


@STAGES.register("teacher", order=1, pipeline=True, help="fine-tune the timm teacher on the task's images")
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    t0 = time.time()
    tc = cfg.teacher
    if cfg.teacher_from:  # shared teacher: nothing to train here
        done = cfg.teacher_dir / "done.json"
        if not done.is_file():
            raise TeacherError(f"teacher_from: {cfg.teacher_from}, but {done} does not exist; train it first: "
                               f"make teacher CONFIG=configs/{cfg.teacher_from}.yaml")
        result = {**json.loads(done.read_text()), "shared_from": cfg.teacher_from}
        return rd.finish(rd.stage("teacher"), "teacher", result)
    layout = open_data(cfg)
    check_evaluation(layout, cfg.data.skip_bad)  # what submit would refuse is refused before training
    val = pixels(cfg, layout, "val")
    dev = device()
    model = create_teacher(tc.model, layout.num_classes, tc.pretrained, tc.weights, tc.drop_rate, tc.img_size, tc.kwargs)
    mean, std = (tc.mean, tc.std) if tc.mean else teacher_norm(model)
    task = Classification(model, Normalize(mean, std), tc.label_smoothing).to(dev)
    if tc.channels_last:
        task.to(memory_format=torch.channels_last)
    out = rd.stage("teacher", save_config=False)  # the engine writes it once the checkpoint is accepted
    meta = {"kind": "teacher", "arch": tc.model, "kwargs": dict(tc.kwargs), "num_classes": layout.num_classes,
            "class_names": layout.class_names, "mean": list(mean), "std": list(std), "img_size": tc.img_size,
            "params": count_params(model)}
    precision = resolve(tc.amp, dev, "teacher")
    if tc.epochs == 0:
        return _as_it_is(cfg, rd, out, task, val, meta, precision, t0)

    train = pixels(cfg, layout, "train")
    train_dl = loader(AugmentedImages(train.pixels, train.split.labels, tc.img_size, tc.aug_scale_min, cfg.seed, tc.augment),
                      tc.batch_size, shuffle=True, workers=cfg.data.workers, seed=cfg.seed,
                      drop_last=len(train.pixels) > tc.batch_size)
    val_dl = loader(PlainImages(val.pixels, val.split.labels, tc.img_size), tc.batch_size * 2, shuffle=False,
                    workers=cfg.data.workers, shard=True)
    opt, sched = optimization(tc, task.parameters(), len(train_dl))

    def on_best(row: dict[str, Any]) -> None:
        save_artifact(pending(out), "teacher", model, {**meta, "val_acc": row["val_acc"], "epoch": row["epoch"]})

    engine = build_engine(cfg, rd, "teacher", out, task, train_dl, val_dl, opt, sched, precision, IDENTITY, on_best,
                          {"train images": train.key, "validation images": val.key})
    history = engine.fit()
    result = {"name": tc.model, "params": meta["params"], "val_acc": max(h["val_acc"] for h in history),
              "val_images": len(val.split.labels),
              "epochs": len(history), "precision": precision.name,
              "train_s": round(sum(h["epoch_s"] for h in history), 1), "wall_s": round(time.time() - t0, 1),
              "artifact": rd.relative(out / "teacher.safetensors")}
    return rd.finish(out, "teacher", result, trained=engine.epochs_run > 0, kind="teacher",
                     inputs={"train images": train.key, "validation images": val.key})


def _as_it_is(cfg: Config, rd: RunDir, out: Path, task: Classification, val: Any, meta: dict[str, Any],
              precision: Any, t0: float) -> dict[str, Any]:
    """``teacher.epochs: 0``: a teacher fine-tuned elsewhere is evaluated on validation and saved, never trained
    (re-done on every run: it takes one pass over the validation images)."""
    dl = loader(PlainImages(val.pixels, val.split.labels, cfg.teacher.img_size), cfg.teacher.batch_size * 2,
                shuffle=False, workers=cfg.data.workers)
    with precision.autocast():
        logits = predict_logits(task.model, dl, task.norm, next(task.parameters()).device)
    acc = accuracy(logits, val.split.labels)
    if distributed.is_main():  # one writer: another rank writing pending/ while rank 0 switches it leaves a stray copy
        save_artifact(pending(out), "teacher", task.model, {**meta, "val_acc": acc, "epoch": 0})  # switched in by finish
        cfg.save(pending(out) / "config.yaml")  # switched in with the model
    result = {"name": cfg.teacher.model, "params": meta["params"], "val_acc": acc, "val_images": len(val.split.labels),
              "epochs": 0,
              "weights": cfg.teacher.weights, "precision": precision.name, "train_s": 0.0,
              "wall_s": round(time.time() - t0, 1), "artifact": rd.relative(out / "teacher.safetensors")}
    return rd.finish(out, "teacher", result, kind="teacher", inputs={"validation images": val.key})
