"""Deployable student: ONNX export with a parity check against PyTorch on real images.

The exported graph takes a normalised float batch (B, 3, H, W) and returns logits (B, C); the
batch dimension is dynamic. Adapters used in training are not part of the student and not exported.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path, write_bytes


def export_onnx(model: nn.Module, img_size: int, path: Path, opset: int = 18) -> Path:
    """Write ``model`` (eval mode) as ONNX to ``path`` atomically; returns ``path``."""
    model = model.eval()
    x = torch.randn(2, 3, img_size, img_size)
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, input_names=["image"], output_names=["logits"], opset_version=opset,
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    write_bytes(path, buf.getvalue())
    return path


def ort_session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def parity(model: nn.Module, path: Path, x: torch.Tensor) -> float:
    """Max abs difference between PyTorch and ONNX Runtime logits on ``x`` (B, 3, H, W)."""
    with torch.inference_mode():
        ref = model.eval()(x).numpy()
    got = ort_session(path).run(["logits"], {"image": x.numpy().astype(np.float32)})[0]
    return float(np.abs(ref - got).max())


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 weight quantisation with ONNX Runtime (weights int8, activations float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import logging

    Path(dst).with_suffix(".tmp.onnx").unlink(missing_ok=True)  # the temp name of earlier versions, if one was killed
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantiser logs one INFO line per tensor on the root logger
    try:
        with atomic_path(dst) as tmp:  # a hidden temp: what a killed export leaves, the next one removes
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return dst
