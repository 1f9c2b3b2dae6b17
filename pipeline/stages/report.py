"""``report`` stage: ``runs/<name>/report.html`` from the run's deployable student, cache and metrics."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import STAGES
from ..config import Config
from ..data import open_data, pixels
from ..data.datasets import Normalize
from ..models import load_student
from ..predict import predict_pixels
from ..teacher_cache import validation_logits
from ..rundir import RunDir


@STAGES.register("report", order=11, help="an HTML report of the run (curves, confusion, budget, architecture)")
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    import torchinfo

    from ..report import build_report  # pandas and matplotlib: only when a report is built

    model, meta = load_student(cfg.run_dir / cfg.student.dir, cfg.student.budget, f"run it first: {rd.command('student')}")
    layout = open_data(cfg)
    val = pixels(cfg, layout, "val")
    s_logits = predict_pixels(model, val.pixels, meta["img_size"], Normalize(meta["mean"], meta["std"]), torch.device("cpu"))
    t_logits = validation_logits(cfg.run_dir / "cache")
    if t_logits is not None and len(t_logits) != len(s_logits):
        t_logits = None
    summary = rd.summary()
    summary["_arch_text"] = str(model)
    summary["_layers_text"] = str(torchinfo.summary(model, input_size=(1, 3, meta["img_size"], meta["img_size"]), verbose=0,
                                                    col_names=("output_size", "num_params", "mult_adds"), depth=3))
    path = build_report(cfg.run_dir, class_names=layout.class_names, val_labels=val.split.labels, teacher_logits=t_logits,
                        student_logits=s_logits, val_images=np.asarray(val.pixels), params=meta["params"],
                        budget=cfg.student.budget, arch=meta["arch"], summary=summary)
    return {"report": rd.relative(path)}
