"""``teacher`` stage: fine-tune a timm model on the task's images."""
from __future__ import annotations

import json
import time
from typing import Any, Optional

import torch
import torch.nn.functional as F

from .. import context as ctx
from ..config import Config
from ..data.datasets import AugmentedImages, Normalize
from ..engine import Engine, device
from ..models import count_params
from ..models.teacher import TeacherError, create_teacher, teacher_norm
from ..predict import accuracy, predict_logits


def run(cfg: Config, config_path: Optional[str] = None) -> dict[str, Any]:
    t0 = time.time()
    tc = cfg.teacher
    if cfg.teacher_from:  # shared teacher: nothing to train here
        done = cfg.teacher_dir / "done.json"
        if not done.is_file():
            raise TeacherError(f"teacher_from: {cfg.teacher_from}, but {done} does not exist; train it first: "
                               f"make teacher CONFIG=configs/{cfg.teacher_from}.yaml")
        result = {**json.loads(done.read_text()), "shared_from": cfg.teacher_from}
        return ctx.finish(cfg, cfg.run_dir / "teacher", "teacher", result)
    out = ctx.stage_dir(cfg, "teacher")
    layout = ctx.open_data(cfg)
    train, val = ctx.pixels(cfg, layout, "train"), ctx.pixels(cfg, layout, "val")
    dev = device()
    model = create_teacher(tc.model, layout.num_classes, tc.pretrained, tc.weights, tc.drop_rate).to(dev)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std = teacher_norm(model)
    norm = Normalize(mean, std).to(dev)
    fwd = torch.compile(model) if tc.compile else model

    ds = AugmentedImages(train.pixels, train.split.labels, tc.img_size, tc.aug_scale_min, cfg.seed)
    train_dl, val_dl, opt, sched = ctx.training_setup(cfg, tc, ds, val, model.parameters())

    def step(batch: Any) -> dict[str, torch.Tensor]:
        x, y = norm(batch[0].to(dev, non_blocking=True)), batch[1].to(dev)
        loss = F.cross_entropy(fwd(x), y, label_smoothing=tc.label_smoothing)
        return {"loss": loss, "ce": loss.detach()}

    def evaluate() -> dict[str, float]:
        return {"val_acc": accuracy(predict_logits(model, val_dl, norm, dev), val.split.labels)}

    def export() -> dict[str, Any]:
        return {"kind": "teacher", "model": model.state_dict(), "arch": tc.model, "num_classes": layout.num_classes,
                "mean": list(mean), "std": list(std), "img_size": tc.img_size, "class_names": layout.class_names}

    engine = Engine(module=model, step=step, evaluate=evaluate, loader=train_dl, optimizer=opt, scheduler=sched,
                    epochs=tc.epochs, out_dir=out, config=cfg.to_dict(),
                    config_hash=cfg.digest("data", "teacher", "seed"), export=export, amp=tc.amp,
                    resume=tc.resume == "auto", max_steps_per_epoch=tc.max_steps_per_epoch,
                    resume_cmd=ctx.cmd("teacher", cfg, config_path))
    history = engine.fit()
    result = {"name": tc.model, "params": count_params(model), "val_acc": max(h["val_acc"] for h in history),
              "epochs": len(history), "train_s": round(sum(h["epoch_s"] for h in history), 1),
              "wall_s": round(time.time() - t0, 1), "checkpoint": str(engine.saver.best)}
    return ctx.finish(cfg, out, "teacher", result)
