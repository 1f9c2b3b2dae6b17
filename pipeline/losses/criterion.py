"""The distillation criterion: a weighted sum of bound loss terms plus their trainable adapters."""
from __future__ import annotations

from typing import Any, Iterable, Optional

from torch import Tensor, nn

from ..fields import ADAPTERS, field
from . import LOSSES, LossConfigError, check_kwargs
from .terms import Term


def validate_terms(terms: Iterable[Any]) -> None:
    """Check names and kwargs of ``[{name, weight, kwargs}]`` config terms against the registry."""
    for i, t in enumerate(terms):
        check_kwargs(t.name, t.kwargs, where=f"student.losses.{i}")


class Criterion(nn.Module):
    """``forward(student, teacher, context) -> {"loss": weighted sum, <name>: term, ...}``.

    ``student`` / ``teacher``: ``{spec name: (B, ...)}`` outputs (``forward_specs``, a teacher's ``outputs``);
    ``context``: ``target`` (B,), ``epoch`` (0-d), ``target_mix`` (B,), ``lam`` (B,). ``student_dims`` /
    ``teacher_dims`` give each spec's channel size (dim 1) for the adapters of ``Adapted`` arguments; adapters
    train with the student and are never part of the deployed model."""

    def __init__(self, terms: list[Term], student_dims: dict[str, int], teacher_dims: dict[str, int],
                 adapters: Optional[dict[str, Any]] = None):
        """``adapters``: per field kind, an object with ``kind`` (an ``ADAPTERS`` name) and ``bn``, overriding the
        kind's default adapter."""
        super().__init__()
        if not terms:
            raise LossConfigError("no loss terms: student.losses is empty")
        adapters = adapters or {}
        self.terms = list(terms)
        self.losses = [LOSSES.get(t.name) for t in self.terms]
        self.adapters = nn.ModuleDict()
        # per term: (argument, where it comes from, spec name, adapter key or None), resolved once
        self.plan: list[list[tuple[str, str, str, Optional[str]]]] = []
        for i, t in enumerate(self.terms):
            rows = []
            for arg, side, spec in t.inputs:
                if spec is None:
                    rows.append((arg, "context", arg, None))
                    continue
                key = f"{i}_{spec.kind}" if side == "s" and spec.kind in t.adapted else None
                rows.append((arg, side, spec.name, key))
                if key is not None:
                    peer = next(s for _, sd, s in t.inputs if sd == "t" and s is not None and s.kind == spec.kind)
                    self.adapters[key] = self._adapter(t, spec.kind, student_dims[spec.name],
                                                       teacher_dims.get(peer.name), adapters)
            self.plan.append(rows)

    @staticmethod
    def _adapter(t: Term, kind: str, c_s: int, c_t: Optional[int], adapters: dict[str, Any]) -> nn.Module:
        f = field(kind)
        if c_t is None:
            raise LossConfigError(f"loss {t.name!r} needs the teacher's {kind!r}; it is not available")
        name, bn = (adapters[kind].kind, adapters[kind].bn) if kind in adapters else (f.adapter, f.adapter_bn)
        if name is None:
            raise LossConfigError(f"loss {t.name!r} adapts {kind!r}, which has no adapter")
        try:
            return ADAPTERS.get(name)(c_s, int(c_t), bn)
        except ValueError as exc:
            raise LossConfigError(f"student.adapters.{kind}: {exc}") from None

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], context: dict[str, Tensor]) -> dict[str, Tensor]:
        sources = {"s": student, "t": teacher, "context": context}
        out: dict[str, Tensor] = {}
        total: Optional[Tensor] = None
        for i, (t, loss, rows) in enumerate(zip(self.terms, self.losses, self.plan)):
            kw = {arg: sources[src][name] for arg, src, name, _ in rows}
            for arg, _, _, key in rows:
                if key is not None:
                    peer = f"{arg[:-2]}_t"
                    kw[arg], kw[peer] = self.adapters[key](kw[arg], kw[peer])
            value = loss(**kw, **t.kwargs)
            label = t.name if t.name not in out else f"{t.name}_{i}"
            out[label] = value.detach()
            total = t.weight * value if total is None else total + t.weight * value
        assert total is not None
        out["loss"] = total
        return out
