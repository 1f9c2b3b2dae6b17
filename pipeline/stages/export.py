"""``export`` stage: the student as ONNX (+ int8), with parity and accuracy on the validation images."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from . import STAGES
from ..atomic import sha256_file, write_json
from ..config import Config
from ..data import open_data, pixels
from ..data.datasets import Normalize, PlainImages, loader
from ..export import export_onnx, ort_session, parity, quantize_int8
from ..models import load_student
from ..predict import accuracy, predict_logits
from ..rundir import RunDir


@STAGES.register("export", order=10, help="the student as ONNX (+ int8) with a parity check")
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    t0 = time.time()
    layout = open_data(cfg)
    today = {"train images": pixels(cfg, layout, "train").key}
    rd.require(cfg.run_dir / cfg.student.dir, today=today)  # refused here, nothing is made (nor a folder, nor a lock)
    # then the student's lock (what a killed export left is removed), and the checks again under it: nothing can
    # retrain the student between the checks and the export
    folder = rd.stage(cfg.student.dir, save_config=False)
    rd.require(folder, today=today)
    model, meta = load_student(folder, cfg.student.budget, f"run it first: {rd.command('student')}")
    val = pixels(cfg, layout, "val")
    norm = Normalize(meta["mean"], meta["std"])
    size = meta["img_size"]
    onnx_path = export_onnx(model, size, folder / "student.onnx")
    dl = loader(PlainImages(val.pixels, val.split.labels, size), 64, shuffle=False)
    x = torch.cat([norm(b["image"]) for b in dl])
    max_diff = parity(model, onnx_path, x[:256])
    torch_acc = accuracy(predict_logits(model, dl, norm, torch.device("cpu"), desc=None), val.split.labels)

    def ort_acc(path: Any) -> float:
        sess = ort_session(path)
        logits = np.concatenate([sess.run(["logits"], {"image": x[i:i + 256].numpy()})[0] for i in range(0, len(x), 256)])
        return accuracy(logits, val.split.labels)

    int8 = quantize_int8(onnx_path, folder / "student.int8.onnx")
    result = {"onnx": rd.relative(onnx_path), "max_abs_diff": max_diff, "val_images_checked": min(256, len(x)),
              "val_acc_torch": torch_acc, "val_acc_onnx": ort_acc(onnx_path), "int8": rd.relative(int8),
              "val_acc_int8": ort_acc(int8), "bytes_fp32": onnx_path.stat().st_size, "bytes_int8": int8.stat().st_size,
              "wall_s": round(time.time() - t0, 1), "student_sha256": sha256_file(folder / "student.safetensors")}
    write_json(folder / "export.json", result)
    rd.update_summary("export", result)
    return result
