"""``cache`` stage: run the frozen teacher once over K recorded views of every training image
(and of the unlabelled evaluation images with ``cache.unlabeled``)."""
from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import Subset

from . import STAGES
from .. import distributed
from .. import teacher_cache as tcache
from ..atomic import remove_stale_temps, save_npy
from ..config import Config
from ..data import distill_set, open_data, pixels
from ..data.datasets import Normalize, PlainImages, ViewImages, loader
from ..engine import device
from ..fields import forward_fields
from ..models import load_teacher
from ..precision import resolve
from ..predict import accuracy, predict_logits
from ..progress import progress
from ..registry import Registry
from ..rundir import RunDir


@STAGES.register("cache", order=2, pipeline=True, help="run the frozen teacher once over K recorded views per image")
@torch.inference_mode()
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    t0 = time.time()
    layout = open_data(cfg)
    train, val = pixels(cfg, layout, "train"), pixels(cfg, layout, "val")
    images = distill_set(cfg, layout, train, cfg.cache.unlabeled)
    how = f"run the teacher stage: {rd.teacher_command()}"
    key = tcache.expected_key(cfg, images.pixel_key, images.unlabeled_key, rd.teacher_command())
    need = tcache.needed(cfg, build=True)
    out = rd.stage("cache")
    if not rd.force and tcache.is_valid(out, key, need):
        return rd.finish(out, None, {"reused": True, "folder": rd.relative(out), "wall_s": round(time.time() - t0, 1)},
                         trained=False)
    if distributed.is_main():
        (out / "manifest.json").unlink(missing_ok=True)  # invalidate first: a crash below leaves no trusted cache
        remove_stale_temps(out)  # partial arrays of a run that was killed
        for d in out.glob(".shard*"):
            shutil.rmtree(d, ignore_errors=True)
    distributed.barrier()
    dev = device()
    precision = resolve(cfg.teacher.amp, dev)
    fields, layer = need["stored"], need["feature_layer"]
    n, k, bs = len(images), cfg.cache.views, cfg.cache.batch_size
    views = tcache.views_for(cfg, n)
    mixes = tcache.mixes_for(cfg, views)
    teachers = [_Teacher(d, how, dev, precision, fields, layer, cfg.teacher.channels_last, cfg.cache.backend,
                         {"feat": cfg.cache.feat_from})
                for d in cfg.teacher_dirs]
    shapes = {f: (n, k, *s) for f, s in teachers[0].shapes().items()}

    # rank r computes images r, r + world, ...; with one process its arrays are the cache itself
    r, w = distributed.rank(), distributed.world()
    mine = np.arange(r, n, w)
    part = out if w == 1 else out / f".shard{r}"
    with ExitStack() as stack:
        arrays = {f: stack.enter_context(tcache.write_array(part / f"{f}.npy", (len(mine), *s[1:]), tcache.field_dtype(cfg, f)))
                  for f, s in shapes.items()}
        for j, teacher in enumerate(teachers):  # an ensemble's mean: each teacher sees the view at its own size
            for v in range(k):
                ds = Subset(ViewImages(images.pixels, images.labels, views, teacher.size, fixed_view=v, mixes=mixes), mine.tolist())
                what = f"cache view {v + 1}/{k}" + (f" teacher {j + 1}/{len(teachers)}" if len(teachers) > 1 else "")
                for batch in progress(loader(ds, bs, shuffle=False, workers=cfg.data.workers), what):
                    rows = batch["index"].numpy() // w  # row in this rank's part
                    for f, t in teacher(batch["image"]).items():
                        y = t.float().cpu().numpy() / len(teachers)
                        arrays[f][rows, v] = y if j == 0 else arrays[f][rows, v] + y
    if w > 1:
        distributed.barrier()
        if distributed.is_main():
            _gather_parts(out, shapes, w, {f: tcache.field_dtype(cfg, f) for f in shapes})
    result: dict[str, Any] = {"reused": False, "folder": rd.relative(out), "images": n,
                              "unlabeled": int((images.labels < 0).sum()), "views": k, "stored": fields,
                              "processes": w, "precision": precision.name if cfg.cache.backend == "torch" else
                              f"{cfg.cache.backend} fp32"}
    if distributed.is_main():
        save_npy(out / "views.npy", views)
        if mixes is not None:
            save_npy(out / "mixes.npy", mixes)
        members = []
        for teacher in teachers:
            vdl = loader(PlainImages(val.pixels, val.split.labels, teacher.size), bs, shuffle=False, workers=cfg.data.workers)
            members.append(predict_logits(lambda x, t=teacher: t.run(x)["logits"], vdl, teacher.norm, dev))
        val_logits = np.mean(members, axis=0).astype(np.float32)
        save_npy(out / "val_logits.npy", val_logits)
        all_shapes = {**{f: list(s) for f, s in shapes.items()}, "views": list(views.shape), "val_logits": list(val_logits.shape),
                      **({"mixes": list(mixes.shape)} if mixes is not None else {})}
        result["teacher_val_acc"] = accuracy(val_logits, val.split.labels)
        extra: dict[str, Any] = {"teacher": teachers[0].meta["arch"], "teacher_val_acc": result["teacher_val_acc"]}
        if len(teachers) > 1:
            result["ensemble_val_acc"] = {str(rd.relative(t.folder)): accuracy(m, val.split.labels)
                                          for t, m in zip(teachers, members)}
            extra["ensemble"] = [t.meta["arch"] for t in teachers]
        tcache.write_manifest(out, key, need, all_shapes, images.files, extra)
    result["wall_s"] = round(time.time() - t0, 1)
    rd.finish(out, "cache", result)
    distributed.barrier()
    return result


class _Teacher:
    """One frozen fine-tuned teacher of the cache: ``(B, S, S, 3)`` uint8 at its own size -> its fields, run by
    ``BACKENDS[backend]``."""

    def __init__(self, folder: Path, how: str, dev: torch.device, precision: Any, fields: list[str],
                 layer: Optional[int], channels_last: bool, backend: str = "torch",
                 options: Optional[dict[str, str]] = None):
        self.folder = folder
        self.model, self.meta = load_teacher(folder, how)
        self.model.to(dev)
        self.norm = Normalize(self.meta["mean"], self.meta["std"]).to(dev)
        self.size = int(self.meta["img_size"])
        self.dev, self.precision, self.fields, self.layer = dev, precision, fields, layer
        self.options = options or {}
        self.run = BACKENDS.get(backend)(self, channels_last)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.run(self.norm(x.to(self.dev, non_blocking=True)))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-image shape of each field, probed with one blank image."""
        probe = self(torch.from_numpy(np.zeros((1, self.size, self.size, 3), np.uint8)))
        return {f: tuple(t.shape[1:]) for f, t in probe.items()}


BACKENDS: Registry[Callable[..., Callable[[torch.Tensor], dict[str, torch.Tensor]]]] = Registry("cache backend")


@BACKENDS.register("torch")
def _torch_backend(t: _Teacher, channels_last: bool) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """PyTorch in the teacher's precision (``teacher.amp``) and memory format (``teacher.channels_last``)."""
    if channels_last:
        t.model.to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with t.precision.autocast():
            return forward_fields(t.model, x, t.fields, t.layer, t.options)

    return run


class _Fields(torch.nn.Module):
    """The teacher's fields as a tuple, in ``names`` order (an exportable graph)."""

    def __init__(self, model: torch.nn.Module, names: list[str], layer: Optional[int], options: dict[str, str]):
        super().__init__()
        self.model, self.names, self.layer, self.options = model, names, layer, options

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = forward_fields(self.model, x, self.names, self.layer, self.options)
        return tuple(out[n] for n in self.names)


@BACKENDS.register("onnxruntime")
def _ort_backend(t: _Teacher, channels_last: bool) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """ONNX Runtime, float32 on the CPU: the teacher, with the fields the cache stores as its outputs, is exported
    in memory once per run; on this project's 2-core CPU it ran 4.3x PyTorch float32 (benchmarks/teacher_speed.py)."""
    import io

    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("cache.backend: onnxruntime needs the onnxruntime package: "
                           ".venv/bin/pip install onnxruntime (or set cache.backend: torch)") from None
    names = list(t.fields)
    buf = io.BytesIO()
    x = torch.zeros(2, 3, t.size, t.size)
    torch.onnx.export(_Fields(t.model.cpu().eval(), names, t.layer, t.options), (x,), buf, input_names=["image"],
                      output_names=names, opset_version=18, dynamo=False,
                      dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = sess.run(names, {"image": x.float().cpu().contiguous().numpy()})
        return {n: torch.from_numpy(o) for n, o in zip(names, outs)}

    return run


def _gather_parts(out: Path, shapes: dict[str, tuple[int, ...]], w: int, dtypes: dict[str, Any]) -> None:
    """Interleave the ranks' parts (rank r holds rows r, r + w, ...) into the cache arrays."""
    for f, shape in shapes.items():
        with tcache.write_array(out / f"{f}.npy", shape, dtypes[f]) as dst:
            for r in range(w):
                dst[r::w] = np.load(out / f".shard{r}" / f"{f}.npy", mmap_mode="r")
    for r in range(w):
        shutil.rmtree(out / f".shard{r}", ignore_errors=True)
