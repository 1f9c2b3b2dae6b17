"""Distillation losses: pure tensor functions, registered by name in ``LOSSES``.

A loss takes keyword-only tensors and keyword hyper-parameters and returns a scalar. Which tensors
it takes is read off its signature and decides what the student computes, what the cache stores and
whether a teacher is needed at all (``pipeline.fields`` lists them):

========== ===================== ==============================================
name       shape                 meaning
========== ===================== ==============================================
logits_s   (B, C)                student logits
logits_t   (B, C)                teacher logits
target     (B,) int64            labels (-1: unlabelled image, skipped by label losses)
feat_s     (B, D)                student embedding
feat_t     (B, D')               teacher pooled features
map_s      (B, c, h, w)          student feature map (at the term's ``student_layer``)
map_t      (B, c', h', w')       teacher feature map (timm ``forward_intermediates``, at the term's ``layer``)
========== ===================== ==============================================

The arguments are named by kind; each term of ``student.losses`` binds them to concrete outputs
(``pipeline.losses.terms``): two FitNet terms with ``layer: 2`` and ``layer: 3`` read two teacher maps.

A student tensor annotated ``Adapted`` (e.g. ``map_s: Adapted``) first goes through the field's
trainable adapter (a 1x1-conv regressor for maps, a linear projection for embeddings), which is
trained with the student and never counted in its budget. Hyper-parameters are validated at config
load from their annotations (``Annotated[float, Field(gt=0)]``).

A new loss is one decorated function in a module of this package; the tests iterate the registry.
"""
from __future__ import annotations

import inspect
import typing
from functools import lru_cache
from typing import Annotated, Any, Callable

from pydantic import ConfigDict, ValidationError, create_model
from torch import Tensor

from ..fields import parse_arg, tensor_args
from ..registry import Registry

LOSSES: Registry[Callable[..., Tensor]] = Registry("loss")
ADAPT = "adapted"
Adapted = Annotated[Tensor, ADAPT]


class LossConfigError(ValueError):
    """A loss term names an unknown loss or a bad hyper-parameter."""


@lru_cache(maxsize=None)
def loss_inputs(name: str) -> frozenset[str]:
    """Tensor arguments the loss ``name`` takes, e.g. ``{"logits_s", "logits_t"}`` (read once per name)."""
    return frozenset(p for p in inspect.signature(LOSSES.get(name)).parameters if p in tensor_args())


@lru_cache(maxsize=None)
def loss_adapted(name: str) -> frozenset[str]:
    """Student tensor arguments of ``name`` annotated ``Adapted``: they pass through a trainable adapter."""
    hints = typing.get_type_hints(LOSSES.get(name), include_extras=True)
    return frozenset(k for k, h in hints.items() if ADAPT in getattr(h, "__metadata__", ()))


def loss_hparams(name: str) -> dict[str, object]:
    """Hyper-parameters of loss ``name`` with their defaults."""
    sig = inspect.signature(LOSSES.get(name))
    return {k: p.default for k, p in sig.parameters.items() if k not in tensor_args()}


def teacher_fields(name: str) -> set[str]:
    """Teacher field kinds loss ``name`` reads (``{"logits"}`` for KD, ``set()`` for a label-only loss)."""
    return {p[0] for p in map(parse_arg, loss_inputs(name)) if p and p[1] == "t"}


@lru_cache(maxsize=None)
def _hparam_model(name: str) -> Any:
    fn = LOSSES.get(name)
    hints = typing.get_type_hints(fn, include_extras=True)
    fields = {k: (hints.get(k, Any), d) for k, d in loss_hparams(name).items()}
    return create_model(f"{name}_kwargs", __config__=ConfigDict(extra="forbid", strict=True), **fields)  # type: ignore[call-overload]


def check_kwargs(name: str, kwargs: dict[str, Any], where: str = "student.losses") -> dict[str, Any]:
    """Validate ``kwargs`` of loss ``name`` against its signature (names, types, bounds); returns them parsed."""
    try:
        LOSSES.get(name)
    except KeyError as exc:
        raise LossConfigError(f"{where}: {exc.args[0]}") from None
    try:
        parsed = _hparam_model(name).model_validate(kwargs)
    except ValidationError as exc:
        allowed = ", ".join(loss_hparams(name)) or "none"
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: "
                         + ("unknown hyper-parameter" if e["type"] == "extra_forbidden" else f"{e['msg']} (got {e.get('input')!r})")
                         for e in exc.errors())
        raise LossConfigError(f"{where}: loss {name!r}: {msgs}; it takes {allowed}") from None
    return {k: getattr(parsed, k) for k in kwargs}


def _import_all() -> None:
    """Import every module of this package: each registers its losses (a new loss may be a new file)."""
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


_import_all()

__all__ = ["LOSSES", "Adapted", "LossConfigError", "check_kwargs", "loss_adapted", "loss_hparams", "loss_inputs",
           "teacher_fields"]
