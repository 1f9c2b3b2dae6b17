"""``student`` stage: distil the teacher into a budgeted student, from the cache (or online)."""
from __future__ import annotations

import time
from typing import Any, Optional

import torch
from torch import nn

from .. import context as ctx
from .. import teacher_cache as tcache
from ..config import Config
from ..data.datasets import Normalize, ViewImages
from ..distill import Criterion
from ..engine import Engine, device
from ..models import check_budget, create_student
from ..models.teacher import teacher_from_checkpoint, teacher_outputs
from ..predict import accuracy, predict_logits
from .cache import expected_key, needed, views_for

STUDENT_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class TeacherSource:
    """Teacher tensors for a batch: looked up in the cache, or computed online on the same view."""

    def __init__(self, cfg: Config, images: ctx.DistillSet, rebuild_cmd: str, dev: torch.device):
        self.dev, self.online = dev, cfg.student.teacher_mode == "online"
        key, need = expected_key(cfg, images.pixel_key, images.unlabeled_key), needed(cfg)
        self.fields, self.layer = need["stored"], need["feature_layer"]
        if self.online:
            self.model, meta = teacher_from_checkpoint(cfg.teacher_dir / "best.pt")
            self.model.to(dev)
            self.norm = Normalize(meta["mean"], meta["std"]).to(dev)
            self.img_size = meta["img_size"]
            self.views = views_for(cfg, len(images))
            with torch.inference_mode():
                x = torch.zeros(1, 3, self.img_size, self.img_size, device=dev)
                _, f, m = teacher_outputs(self.model, x, self.layer)
            self.dims = {"feat": f.shape[1], "map": None if m is None else m.shape[1]}
        else:
            self.cache = tcache.load_cache(cfg.run_dir / "cache", key, need, rebuild_cmd)
            self.views = self.cache.views
            self.dims = {"feat": None if self.cache.feat is None else self.cache.feat.shape[-1],
                         "map": None if self.cache.map is None else self.cache.map.shape[2]}
            self.img_size = None

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        if self.online:
            with torch.inference_mode():
                lo, fe, ma = teacher_outputs(self.model, self.norm(batch[4].to(self.dev)), self.layer)
            got = {"logits_t": lo, "feat_t": fe, "map_t": ma}
            return {k: v.float().clone() for k, v in got.items() if v is not None}  # clone: leave inference mode
        idx, view = batch[2], batch[3]
        out = {f"{f}_t": self.cache.lookup(idx, view, f).to(self.dev, non_blocking=True) for f in self.fields}
        return out


def run(cfg: Config, config_path: Optional[str] = None) -> dict[str, Any]:
    t0 = time.time()
    sc = cfg.student
    out = ctx.stage_dir(cfg, sc.dir)
    layout = ctx.open_data(cfg)
    train, val = ctx.pixels(cfg, layout, "train"), ctx.pixels(cfg, layout, "val")
    dev = device()
    uses_teacher = any(t.name != "ce" for t in sc.effective_losses())
    # unlabelled images carry only teacher targets: a CE-only student trains on the labelled ones
    images = ctx.distill_set(cfg, layout, train, unlabeled=cfg.cache.unlabeled and uses_teacher)
    student = create_student(sc.model, layout.num_classes, **sc.kwargs)
    params = check_budget(student, sc.budget, f"student {sc.model!r}")  # the gate: before any training
    student.to(dev)
    terms = sc.effective_losses()
    teacher = TeacherSource(cfg, images, ctx.cmd("cache", cfg, config_path), dev) if uses_teacher else None
    views = teacher.views if teacher else views_for(cfg, len(images))
    layer = sc.student_layer % len(student.stage_channels)
    criterion = Criterion(terms, {"feat": student.num_features, "map": student.stage_channels[layer]},
                          teacher.dims if teacher else {}).to(dev)
    needs = criterion.needs
    trainable = nn.ModuleDict({"student": student, "criterion": criterion})
    norm = Normalize(*STUDENT_NORM).to(dev)
    if sc.channels_last:
        student.to(memory_format=torch.channels_last)

    ds = ViewImages(images.pixels, images.labels, views, sc.img_size, seed=cfg.seed,
                    teacher_size=teacher.img_size if teacher and teacher.online else None)
    train_dl, val_dl, opt, sched = ctx.training_setup(cfg, sc, ds, val, trainable.parameters())

    def step(batch: Any) -> dict[str, torch.Tensor]:
        x, y = norm(batch[0].to(dev, non_blocking=True)), batch[1].to(dev)
        tensors: dict[str, torch.Tensor] = {"target": y}
        if "map_s" in needs:
            maps = student.forward_stages(x)
            tensors["map_s"], f = maps[layer], maps[-1]
        else:
            f = student.forward_features(x)
        tensors["logits_s"] = student.forward_head(f)
        if "feat_s" in needs:
            tensors["feat_s"] = student.forward_head(f, pre_logits=True)
        if teacher is not None:
            tensors.update(teacher(batch))
        return criterion(**tensors)

    def evaluate() -> dict[str, float]:
        return {"val_acc": accuracy(predict_logits(student, val_dl, norm, dev), val.split.labels)}

    def export() -> dict[str, Any]:
        return {"kind": "student", "model": student.state_dict(), "arch": sc.model, "kwargs": dict(sc.kwargs),
                "num_classes": layout.num_classes, "img_size": sc.img_size, "mean": list(STUDENT_NORM[0]),
                "std": list(STUDENT_NORM[1]), "params": params, "class_names": layout.class_names}

    engine = Engine(module=trainable, step=step, evaluate=evaluate, loader=train_dl, optimizer=opt, scheduler=sched,
                    epochs=sc.epochs, out_dir=out, config=cfg.to_dict(),
                    config_hash=cfg.digest("data", "teacher", "cache", "student", "seed"), export=export, amp=sc.amp,
                    resume=sc.resume == "auto", max_steps_per_epoch=sc.max_steps_per_epoch,
                    resume_cmd=ctx.cmd("student", cfg, config_path))
    history = engine.fit()
    result = {"name": sc.model, "params": params, "budget": sc.budget, "val_acc": max(h["val_acc"] for h in history),
              "losses": [t.model_dump() for t in terms], "teacher_mode": sc.teacher_mode if uses_teacher else "none",
              "epochs": len(history), "train_s": round(sum(h["epoch_s"] for h in history), 1),
              "wall_s": round(time.time() - t0, 1), "checkpoint": str(engine.saver.best)}
    return ctx.finish(cfg, out, "student" if sc.dir == "student" else f"student:{sc.dir}", result)
