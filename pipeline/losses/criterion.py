"""The distillation criterion: a weighted sum of registered losses plus their trainable adapters."""
from __future__ import annotations

from typing import Any, Iterable, Optional

from torch import Tensor, nn

from ..fields import ADAPTERS, field, fields_of
from . import LOSSES, LossConfigError, check_kwargs, loss_adapted, loss_inputs


def validate_terms(terms: Iterable[Any]) -> None:
    """Check names and kwargs of ``[{name, weight, kwargs}]`` terms against the registry."""
    for i, t in enumerate(terms):
        check_kwargs(t.name, t.kwargs, where=f"student.losses.{i}")


def needs(terms: Iterable[Any]) -> set[str]:
    """Tensor names the terms read (``logits_t``, ``feat_s``, ``map_t``, ...)."""
    out: set[str] = set()
    for t in terms:
        out |= loss_inputs(t.name)
    return out


class Criterion(nn.Module):
    """``forward(**tensors) -> {"loss": weighted sum, <name>: term, ...}``.

    ``student_dims``/``teacher_dims`` give each field's channel size (dim 1) for the adapters of
    ``Adapted`` arguments; adapters train with the student and are never part of the deployed model.
    """

    def __init__(self, terms: list[Any], student_dims: dict[str, int], teacher_dims: dict[str, Optional[int]],
                 adapters: Optional[dict[str, Any]] = None):
        """``adapters``: per field, an object with ``kind`` (an ``ADAPTERS`` name) and ``bn``, overriding the
        field's default adapter."""
        super().__init__()
        adapters = adapters or {}
        validate_terms(terms)
        self.terms = list(terms)
        self.kwargs = [check_kwargs(t.name, t.kwargs) for t in self.terms]
        self.adapters = nn.ModuleDict()
        for i, t in enumerate(self.terms):
            for name in fields_of(loss_adapted(t.name), "s"):
                f = field(name)
                if teacher_dims.get(name) is None:
                    raise LossConfigError(f"loss {t.name!r} needs the teacher's {name!r}; it is not available "
                                          f"(for maps set cache.feature_layer)")
                kind, bn = (adapters[name].kind, adapters[name].bn) if name in adapters else (f.adapter, f.adapter_bn)
                if kind is None:
                    raise LossConfigError(f"loss {t.name!r} adapts {name!r}, which has no adapter")
                try:
                    self.adapters[f"{i}_{name}"] = ADAPTERS.get(kind)(student_dims[name], int(teacher_dims[name]), bn)  # type: ignore[arg-type]
                except ValueError as exc:
                    raise LossConfigError(f"student.adapters.{name}: {exc}") from None

    @property
    def needs(self) -> set[str]:
        return needs(self.terms)

    def forward(self, **tensors: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        total: Optional[Tensor] = None
        for i, (t, kwargs) in enumerate(zip(self.terms, self.kwargs)):
            kw = {k: tensors[k] for k in loss_inputs(t.name)}
            for name in fields_of(loss_adapted(t.name), "s"):
                kw[f"{name}_s"], kw[f"{name}_t"] = self.adapters[f"{i}_{name}"](kw[f"{name}_s"], kw[f"{name}_t"])
            value = LOSSES.get(t.name)(**kw, **kwargs)
            key = t.name if t.name not in out else f"{t.name}_{i}"
            out[key] = value.detach()
            total = t.weight * value if total is None else total + t.weight * value
        if total is None:
            raise LossConfigError("no loss terms: student.losses is empty")
        out["loss"] = total
        return out
