"""The parameter-count gate: no model over budget is trained or submitted.

Parameters are counted two ways and the gate takes the larger:

* **unique**: ``sum(p.numel())`` over ``model.parameters()`` (a tensor shared by two layers counts once);
* **applied**: what ``torchsummary`` (the HW13 graders' tool) reports: every module's own parameters,
  counted each time the module runs in one forward pass (a block applied twice counts twice).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn


class BudgetError(ValueError):
    """A model has more parameters than the budget allows."""


@dataclass(frozen=True)
class ParamCount:
    unique: int
    applied: int

    @property
    def gated(self) -> int:
        """The count the gate uses: the larger of the two."""
        return max(self.unique, self.applied)


def count_params(model: nn.Module) -> int:
    """Every parameter, counted as ``sum(p.numel())`` in eval mode on a copy (shared tensors once)."""
    m = copy.deepcopy(model).eval()
    return int(sum(p.numel() for p in m.parameters()))


def count_applied(model: nn.Module, img_size: int = 32) -> int:
    """``torchsummary``-style count: each module's own parameters, once per call in a forward pass of a
    (1, 3, img_size, img_size) input, on an eval-mode copy."""
    m = copy.deepcopy(model).eval().cpu()
    total = [0]

    def hook(mod: nn.Module, _inp: object, _out: object) -> None:
        total[0] += sum(p.numel() for p in mod.parameters(recurse=False))

    handles = [mod.register_forward_hook(hook) for mod in m.modules()]
    try:
        with torch.no_grad():
            m(torch.zeros(1, 3, img_size, img_size))
    finally:
        for h in handles:
            h.remove()
    return int(total[0])


def param_count(model: nn.Module, img_size: int = 32) -> ParamCount:
    return ParamCount(count_params(model), count_applied(model, img_size))


def check_budget(model: nn.Module, budget: int, what: str = "student", img_size: int = 32) -> int:
    """Return the gated parameter count (the larger of unique and applied), or raise ``BudgetError``
    naming both counts, the budget and the fix."""
    c = param_count(model, img_size)
    if c.gated > budget:
        _over(what, c.gated, f"{c.unique:,} unique, {c.applied:,} counted per use as torchsummary does", budget)
    return c.gated


def check_count(count: int, budget: int, what: str = "student") -> int:
    """The gate before anything is built: ``count`` is a family's analytic parameter count (e.g.
    ``shaped_params``); return it, or raise ``BudgetError`` as ``check_budget`` does."""
    if count > budget:
        _over(what, count, "counted from student.kwargs before building", budget)
    return count


def _over(what: str, gated: int, how: str, budget: int) -> None:
    raise BudgetError(
        f"{what} has {gated:,} parameters ({how}), {gated - budget:,} over the budget of {budget:,}. "
        "Lower student.kwargs.width or depth (or the shaped student's channels/blocks/expand; see `distil params`), "
        "or raise student.budget if the competition allows it."
    )


def largest_width(build: Callable[[float], nn.Module], budget: int, img_size: int = 32, lo: float = 0.05,
                  hi: float = 4.0, step: float = 0.01,
                  count: Optional[Callable[[float], int]] = None) -> Optional[tuple[float, int]]:
    """The largest ``width`` (a multiple of ``step`` in [lo, hi]) whose model ``build(width)`` fits ``budget``
    by the gated count, and that count; None when even ``lo`` does not fit. Parameter counts grow with width
    (channel widths are rounded, so the count is a step function; bisection finds the edge of it).
    ``count``: the family's analytic count of a width (nothing built), used instead of building."""
    def gated(w: float) -> int:
        return count(w) if count is not None else param_count(build(w), img_size).gated

    n_lo, n_hi = round(lo / step), round(hi / step)
    if gated(n_lo * step) > budget:
        return None
    while n_lo < n_hi:  # invariant: n_lo fits
        mid = (n_lo + n_hi + 1) // 2
        if gated(mid * step) <= budget:
            n_lo = mid
        else:
            n_hi = mid - 1
    w = round(n_lo * step, 4)
    return w, gated(w)
