"""``export`` stage: the student as ONNX (+ int8), with parity and accuracy on the validation images."""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch

from .. import context as ctx
from ..atomic import write_json
from ..config import Config
from ..data.datasets import Normalize, PlainImages, loader
from ..export import export_onnx, ort_session, parity, quantize_int8
from ..predict import accuracy
from .submit import load_student


def run(cfg: Config, config_path: Optional[str] = None) -> dict[str, Any]:
    t0 = time.time()
    out = ctx.stage_dir(cfg, cfg.student.dir)
    layout = ctx.open_data(cfg)
    val = ctx.pixels(cfg, layout, "val")
    model, ck = load_student(out / "best.pt", cfg.student.budget)
    norm = Normalize(ck["mean"], ck["std"])
    size = ck["img_size"]
    onnx_path = export_onnx(model, size, out / "student.onnx")
    dl = loader(PlainImages(val.pixels, val.split.labels, size), 64, shuffle=False)
    x = torch.cat([norm(b[0]) for b in dl])
    max_diff = parity(model, onnx_path, x[:256])
    with torch.inference_mode():
        torch_acc = accuracy(model.eval()(x).numpy(), val.split.labels)

    def ort_acc(path: Any) -> float:
        sess = ort_session(path)
        logits = np.concatenate([sess.run(["logits"], {"image": x[i:i + 256].numpy()})[0] for i in range(0, len(x), 256)])
        return accuracy(logits, val.split.labels)

    int8 = quantize_int8(onnx_path, out / "student.int8.onnx")
    result = {"onnx": str(onnx_path), "max_abs_diff": max_diff, "val_images_checked": min(256, len(x)),
              "val_acc_torch": torch_acc, "val_acc_onnx": ort_acc(onnx_path), "int8": str(int8),
              "val_acc_int8": ort_acc(int8), "bytes_fp32": onnx_path.stat().st_size, "bytes_int8": int8.stat().st_size,
              "wall_s": round(time.time() - t0, 1)}
    write_json(out / "export.json", result)
    ctx.update_summary(cfg, "export", result)
    return result
