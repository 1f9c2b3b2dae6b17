"""Loss terms bound to their fields: what each term of ``student.losses`` reads, from whom, at which layer.

A loss declares the tensors it takes in its signature, by kind and side (``map_s``, ``map_t``, ``logits_t``,
``target``); a term of the config binds each one to a ``FieldSpec`` once, here: the teacher's ``map`` at the
term's ``layer`` (default ``cache.feature_layer``), the student's at its ``student_layer`` (default
``student.student_layer``), ``feat`` as ``cache.feat_from`` / ``student.feat_from`` give it. Everything that
needs teacher outputs (the cache stage, an online teacher, the criterion) asks the terms, never a loss's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..fields import LOGITS, FieldSpec, field, parse_arg
from . import LOSSES, check_kwargs, loss_adapted, loss_inputs


@dataclass(frozen=True)
class Term:
    """One weighted loss ``name(**inputs, **kwargs)``; ``inputs``: ``(argument, side, spec)`` per tensor argument
    (side ``"s"``/``"t"``, or ``""`` with spec None for a context argument such as ``target``); ``adapted``: the
    kinds whose student tensor first goes through a trainable adapter."""

    name: str
    weight: float
    kwargs: dict[str, Any]
    inputs: tuple[tuple[str, str, Optional[FieldSpec]], ...]
    adapted: frozenset[str]

    def specs(self, side: str) -> list[FieldSpec]:
        """The outputs this term reads from the student (``"s"``) or the teacher (``"t"``)."""
        return [spec for _, sd, spec in self.inputs if sd == side and spec is not None]

    @property
    def uses_teacher(self) -> bool:
        return bool(self.specs("t"))


def bind(t: Any, cfg: Any, where: str = "student.losses") -> Term:
    """The ``Term`` of config term ``t`` (``LossTerm``: name, weight, kwargs, layer, student_layer) under ``cfg``."""
    kwargs = check_kwargs(t.name, t.kwargs, where)
    inputs = []
    for arg in sorted(loss_inputs(t.name)):
        parsed = parse_arg(arg)
        if parsed is None:
            inputs.append((arg, "", None))
            continue
        kind, side = parsed
        teacher = side == "t"
        layer = None
        if field(kind).needs_layer:
            own = t.layer if teacher else t.student_layer
            layer = own if own is not None else (cfg.cache.feature_layer if teacher else cfg.student.student_layer)
            if layer is None:
                raise ValueError(f"cache.feature_layer is not set, but {t.name} ({where}) needs the teacher's {kind}: "
                                 "set cache.feature_layer (or the term's layer) to a timm feature index of the teacher "
                                 "(e.g. 3)")
        feat_from = (cfg.cache.feat_from if teacher else cfg.student.feat_from) if kind == "feat" else "pre_logits"
        dtype = cfg.cache.logits_dtype if teacher and kind == "logits" else None
        inputs.append((arg, side, FieldSpec(kind, layer, feat_from, dtype)))
    adapted = frozenset(parse_arg(a)[0] for a in loss_adapted(t.name) if parse_arg(a))  # type: ignore[index]
    return Term(t.name, t.weight, kwargs, tuple(inputs), adapted)


def reads_map(name: str) -> bool:
    """Whether loss ``name`` reads a field at a layer (a feature map)."""
    return any(p is not None and field(p[0]).needs_layer for p in map(parse_arg, loss_inputs(name)))


def bind_terms(cfg: Any) -> list[Term]:
    """The terms the student trains with (``student.effective_losses()``), bound to their fields."""
    return [bind(t, cfg, f"student.losses.{i}") for i, t in enumerate(cfg.student.effective_losses())]


def teacher_specs(cfg: Any, terms: Optional[list[Term]] = None, build: bool = False) -> list[FieldSpec]:
    """Every teacher output the run reads: ``logits`` (always: validation, reports), the terms' (``terms``, default
    ``bind_terms(cfg)``), and when building the cache also ``cache.store``'s."""
    terms = bind_terms(cfg) if terms is None else terms
    logits = FieldSpec(LOGITS.kind, dtype=cfg.cache.logits_dtype)
    specs = {s.name: s for t in terms for s in t.specs("t")}
    specs.setdefault("logits", logits)
    if build:
        for kind in cfg.cache.store:
            s = FieldSpec(kind, cfg.cache.feature_layer, cfg.cache.feat_from)
            specs.setdefault(s.name, s)
    return [specs[n] for n in sorted(specs)]
