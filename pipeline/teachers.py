"""The teacher as the student sees it: one object that answers every teacher output a run reads.

``TeacherRunner`` turns field specs into tensors: one frozen fine-tuned teacher, ``(B, S, S, 3)`` uint8 at its own
size -> ``{spec name: (B, ...)}``, run by ``BACKENDS`` (the cache stage loops it over the recorded views; an
online teacher calls it per batch). ``open_teacher`` gives the student stage its ``TeacherOutputs``: the cache
(``CachedTeacher``), a runner on the same view (``OnlineTeacher``) or none (``NoTeacher``, label-only losses).
All answer the same two questions: ``item(index, view)`` (in a data loader worker) and ``outputs(batch)`` (on the
device), ``{spec name: float32 (B, ...)}``::

    config terms --bind--> FieldSpecs --> TeacherRunner --> CacheWriter --> cache files
                                                 |                              |
                                          OnlineTeacher                    CachedTeacher (load_cache)
                                                 \\---- outputs(batch) -------/
                                                              |
                                                    Distiller -> Criterion -> loss terms
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from . import teacher_cache
from .data.datasets import Normalize
from .fields import FieldSpec, forward_specs
from .models.artifacts import load_teacher
from .precision import Precision
from .registry import Registry

Run = Callable[[Tensor], dict[str, Tensor]]


class TeacherRunner:
    """One frozen fine-tuned teacher in ``folder``: ``runner(images)`` with uint8 (B, S, S, 3) at ``runner.size``
    -> ``{spec.name: (B, ...)}``; ``backend`` (a ``BACKENDS`` name) runs it, in ``precision``."""

    def __init__(self, folder: Path, specs: list[FieldSpec], how: str, dev: torch.device,
                 precision: Optional[Precision] = None, channels_last: bool = False, backend: str = "torch"):
        self.folder, self.specs, self.dev = folder, list(specs), dev
        self.model, self.meta = load_teacher(folder, how)
        bad = [n for n, t in self.model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:  # its outputs would be NaN: the student would blame its own learning rate
            from .models.teacher import TeacherError

            raise TeacherError(f"{folder}/teacher.safetensors has non-finite weights (NaN or inf in {len(bad)} tensors, "
                               f"e.g. {bad[0][:80]}); retrain it: {how}")
        self.model.to(dev)
        self.norm = Normalize(self.meta["mean"], self.meta["std"]).to(dev)
        self.size = int(self.meta["img_size"])
        self.precision = precision or Precision(dev.type, None)
        self.run: Run = BACKENDS.get(backend)(self, channels_last)

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        return self.run(self.norm(images.to(self.dev, non_blocking=True)))

    def logits(self, x: Tensor) -> Tensor:
        """Normalised (B, 3, S, S) -> (B, C): what validation scores."""
        return self.run(x)["logits"]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-image shape of each output, probed with one blank image."""
        probe = self(torch.from_numpy(np.zeros((1, self.size, self.size, 3), np.uint8)))
        return {n: tuple(t.shape[1:]) for n, t in probe.items()}


BACKENDS: Registry[Callable[[TeacherRunner, bool], Run]] = Registry("cache backend")


@BACKENDS.register("torch")
def _torch_backend(t: TeacherRunner, channels_last: bool) -> Run:
    """PyTorch in the teacher's precision (``teacher.amp``) and memory format (``teacher.channels_last``)."""
    if channels_last:
        t.model.to(memory_format=torch.channels_last)

    def run(x: Tensor) -> dict[str, Tensor]:
        with t.precision.autocast():
            return forward_specs(t.model, x, t.specs)

    return run


class _Outputs(nn.Module):
    """The teacher's outputs as a tuple, in ``specs`` order (an exportable graph)."""

    def __init__(self, model: nn.Module, specs: list[FieldSpec]):
        super().__init__()
        self.model, self.specs = model, specs

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = forward_specs(self.model, x, self.specs)
        return tuple(out[s.name] for s in self.specs)


@BACKENDS.register("onnxruntime")
def _ort_backend(t: TeacherRunner, channels_last: bool) -> Run:
    """ONNX Runtime, float32 on the CPU: the teacher, with the outputs the cache stores, is exported in memory once
    per run; on this project's 2-core CPU it ran 4.3x PyTorch float32 (benchmarks/teacher_speed.py)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("cache.backend: onnxruntime needs the onnxruntime package: "
                           ".venv/bin/pip install onnxruntime (or set cache.backend: torch)") from None
    names = [s.name for s in t.specs]
    buf = io.BytesIO()
    x = torch.zeros(2, 3, t.size, t.size)
    torch.onnx.export(_Outputs(t.model.cpu().eval(), t.specs), (x,), buf, input_names=["image"],
                      output_names=names, opset_version=18, dynamo=False,
                      dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])

    def run(x: Tensor) -> dict[str, Tensor]:
        outs = sess.run(names, {"image": x.float().cpu().contiguous().numpy()})
        return {n: torch.from_numpy(o) for n, o in zip(names, outs)}

    return run


class TeacherOutputs:
    """What the student reads of its teacher. ``specs``: the outputs; ``dims``: each one's channel size (dim 1);
    ``views`` (N, K, 5) / ``mixes`` (N, K, 7) or None: the recorded views; ``image_size``: the size at which the
    data set also renders each view for the teacher (``teacher_image``; None: not needed); ``key``: content key
    of the teacher for checkpoints (None: no teacher)."""

    specs: list[FieldSpec]
    dims: dict[str, int]
    views: np.ndarray
    mixes: Optional[np.ndarray]
    image_size: Optional[int] = None
    key: Optional[str] = None

    def item(self, index: int, view: int) -> dict[str, np.ndarray]:
        """Per image, in a data loader worker: what the batch must carry for ``outputs`` (``teacher.<name>``)."""
        return {}

    def rows(self, index: np.ndarray, view: np.ndarray) -> dict[str, np.ndarray]:
        """``item`` for a batch (``index``, ``view``: (B,)): ``{key: (B, ...)}``, as collating the items stacks them."""
        items = [self.item(int(i), int(v)) for i, v in zip(index, view)]
        return {k: np.stack([it[k] for it in items]) for k in (items[0] if items else {})}

    def outputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Per batch, on the device: ``{spec name: float32 (B, ...)}``."""
        return {}


class NoTeacher(TeacherOutputs):
    """Label-only losses: the recorded views, no outputs."""

    def __init__(self, views: np.ndarray, mixes: Optional[np.ndarray]):
        self.specs, self.dims, self.views, self.mixes = [], {}, views, mixes


PREFIX = "teacher."  # batch keys of cached outputs


class CachedTeacher(TeacherOutputs):
    """The teacher's recorded outputs: read per item from the memory-mapped cache, collated into the batch."""

    def __init__(self, cache: teacher_cache.CacheReader, specs: list[FieldSpec], key: str):
        self.cache, self.specs, self.key = cache, list(specs), key
        self.views, self.mixes = cache.views, cache.mixes
        self.dims = {s.name: int(cache.arrays[s.name].shape[2]) for s in self.specs}

    def item(self, index: int, view: int) -> dict[str, np.ndarray]:
        return {PREFIX + n: v for n, v in self.cache.row(index, view).items()}

    def rows(self, index: np.ndarray, view: np.ndarray) -> dict[str, np.ndarray]:
        return {PREFIX + n: v for n, v in self.cache.rows(index, view).items()}

    def outputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {s.name: batch[PREFIX + s.name].float() for s in self.specs}


class OnlineTeacher(TeacherOutputs):
    """A fine-tuned teacher run on the student's view at the teacher's size (``batch["teacher_image"]``): frozen
    three ways (``eval()``, ``requires_grad_(False)``, ``torch.inference_mode()``); not a module of the student,
    so it is neither trained nor saved with it."""

    def __init__(self, runner: TeacherRunner, views: np.ndarray, mixes: Optional[np.ndarray], key: str):
        self.runner, self.specs, self.views, self.mixes, self.key = runner, runner.specs, views, mixes, key
        self.image_size = runner.size
        self.dims = {n: int(s[0]) for n, s in runner.shapes().items()}

    def outputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        out = self.runner(batch["teacher_image"])
        return {k: v.float().clone() for k, v in out.items()}  # clone: usable outside inference mode


def open_teacher(cfg: Any, specs: list[FieldSpec], images: Any, dev: torch.device, teacher_cmd: str,
                 cache_cmd: str) -> TeacherOutputs:
    """The teacher outputs ``specs`` of the distillation images ``images`` (a ``DistillSet``) for the student of
    ``cfg``: from the cache (refused with ``StaleCacheError`` when it does not match; ``cache_cmd`` rebuilds it), from
    the teacher run online (``student.teacher_mode: online``), or none when ``specs`` is empty. ``teacher_cmd``
    trains the teacher (for messages)."""
    if not specs:
        return NoTeacher(*teacher_cache.recorded_views(cfg, len(images)))
    # the teacher's files are checked (a missing teacher names `teacher_cmd`) before they are hashed
    if cfg.student.teacher_mode == "online":
        runner = TeacherRunner(cfg.teacher_dir, specs, f"run the teacher stage: {teacher_cmd}", dev,
                               channels_last=cfg.student.channels_last)
        return OnlineTeacher(runner, *teacher_cache.recorded_views(cfg, len(images)),
                             key=teacher_cache.teachers_sha256(cfg))
    expected = teacher_cache.expected_key(cfg, images.pixel_key, images.unlabeled_key, teacher_cmd)
    cache = teacher_cache.load_cache(cfg.run_dir / "cache", expected, specs, cache_cmd)
    return CachedTeacher(cache, specs, teacher_cache.teachers_sha256(cfg))
