"""The distillation criterion: a weighted sum of registered losses plus their trainable adapters.

Adapters (a linear projection for ``project="feat"`` losses, a 1x1-conv regressor for
``project="map"`` losses) are trained with the student and dropped at export: they never count
against the parameter budget.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .losses import LOSSES, loss_hparams, loss_inputs


class LossConfigError(ValueError):
    """A loss term names an unknown loss or hyper-parameter."""


def validate_terms(terms: Iterable[Any]) -> None:
    """Check names and kwargs of ``[{name, weight, kwargs}]`` terms against the registry."""
    for t in terms:
        try:
            LOSSES.get(t.name)
        except KeyError as exc:
            raise LossConfigError(f"student.losses: {exc.args[0]}") from None
        allowed = loss_hparams(t.name)
        bad = sorted(set(t.kwargs) - set(allowed))
        if bad:
            raise LossConfigError(
                f"student.losses: loss {t.name!r} has no hyper-parameter {', '.join(map(repr, bad))}; "
                f"it takes {', '.join(allowed) or 'none'}"
            )


class Criterion(nn.Module):
    """``forward(**tensors) -> {"loss": weighted sum, <name>: term, ...}``.

    ``student_dims``/``teacher_dims`` give ``feat`` (D) and ``map`` (channels) sizes for adapters.
    """

    def __init__(self, terms: list[Any], student_dims: dict[str, int], teacher_dims: dict[str, Optional[int]]):
        super().__init__()
        validate_terms(terms)
        self.terms = list(terms)
        self.adapters = nn.ModuleDict()
        for i, t in enumerate(self.terms):
            proj = LOSSES.meta(t.name).get("project")
            if proj == "feat":
                if teacher_dims.get("feat") is None:
                    raise LossConfigError(f"loss {t.name!r} needs teacher features; they are not in the cache")
                self.adapters[str(i)] = nn.Linear(student_dims["feat"], int(teacher_dims["feat"]))  # type: ignore[arg-type]
            elif proj == "map":
                if teacher_dims.get("map") is None:
                    raise LossConfigError(f"loss {t.name!r} needs a teacher feature map: set cache.feature_layer")
                self.adapters[str(i)] = nn.Sequential(
                    nn.Conv2d(student_dims["map"], int(teacher_dims["map"]), 1, bias=False),  # type: ignore[arg-type]
                    nn.BatchNorm2d(int(teacher_dims["map"])))  # type: ignore[arg-type]

    @property
    def needs(self) -> set[str]:
        """Tensor names the configured losses read (``logits_t``, ``feat_s``, ``map_t``, ...)."""
        return set().union(*(loss_inputs(t.name) for t in self.terms)) if self.terms else set()

    def forward(self, **tensors: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        total: Optional[Tensor] = None
        for i, t in enumerate(self.terms):
            kw = {k: tensors[k] for k in loss_inputs(t.name)}
            ad = self.adapters[str(i)] if str(i) in self.adapters else None
            if ad is not None and "feat_s" in kw:
                kw["feat_s"] = ad(kw["feat_s"])
            if ad is not None and "map_s" in kw:
                m = ad(kw["map_s"])
                if m.shape[-2:] != kw["map_t"].shape[-2:]:
                    m = F.interpolate(m, size=kw["map_t"].shape[-2:], mode="bilinear", align_corners=False)
                kw["map_s"] = m
            value = LOSSES.get(t.name)(**kw, **t.kwargs)
            key = t.name if t.name not in out else f"{t.name}_{i}"
            out[key] = value.detach()
            total = t.weight * value if total is None else total + t.weight * value
        assert total is not None, "no loss terms"
        out["loss"] = total
        return out


def teacher_fields(needs: set[str]) -> list[str]:
    """Which cache arrays the losses need: ``logits`` always, ``feat``/``map`` on demand."""
    return ["logits"] + [f for f in ("feat", "map") if f"{f}_t" in needs]
