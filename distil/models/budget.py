"""The parameter-count gate: no model over budget is trained or submitted."""
from __future__ import annotations

import copy

from torch import nn


class BudgetError(ValueError):
    """A model has more parameters than the budget allows."""


def count_params(model: nn.Module) -> int:
    """Every parameter, counted as ``sum(p.numel())`` in eval mode on a copy (shared tensors once)."""
    m = copy.deepcopy(model).eval()
    return int(sum(p.numel() for p in m.parameters()))


def check_budget(model: nn.Module, budget: int, what: str = "student") -> int:
    """Return the parameter count, or raise ``BudgetError`` naming the count, the budget and the fix."""
    n = count_params(model)
    if n > budget:
        raise BudgetError(
            f"{what} has {n:,} parameters, {n - budget:,} over the budget of {budget:,}. "
            "Lower student.kwargs.width or depth (see `distil params`), or raise student.budget "
            "if the competition allows it."
        )
    return n
