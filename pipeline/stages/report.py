"""``report`` stage: ``runs/<name>/report.html`` from the run's checkpoints, cache and metrics."""
from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
import torch

from .. import context as ctx
from ..config import Config
from ..data.datasets import Normalize
from ..predict import predict_pixels
from ..report import build_report
from .submit import load_student


def run(cfg: Config, config_path: Optional[str] = None) -> dict[str, Any]:
    layout = ctx.open_data(cfg)
    val = ctx.pixels(cfg, layout, "val")
    model, ck = load_student(cfg.run_dir / cfg.student.dir / "best.pt", cfg.student.budget)
    s_logits = predict_pixels(model, val.pixels, ck["img_size"], Normalize(ck["mean"], ck["std"]), torch.device("cpu"))
    t_path = cfg.run_dir / "cache" / "val_logits.npy"
    t_logits = np.load(t_path) if t_path.is_file() else None
    if t_logits is not None and len(t_logits) != len(s_logits):
        t_logits = None
    summary_p = cfg.run_dir / "summary.json"
    summary = json.loads(summary_p.read_text()) if summary_p.is_file() else {}
    summary["_arch_text"] = str(model)
    path = build_report(cfg.run_dir, class_names=layout.class_names, val_labels=val.split.labels, teacher_logits=t_logits,
                        student_logits=s_logits, val_images=np.asarray(val.pixels), params=ck["params"],
                        budget=cfg.student.budget, arch=ck["arch"], summary=summary)
    return {"report": str(path)}
