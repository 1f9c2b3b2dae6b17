"""95% confidence intervals for a validation accuracy, and which runs a validation set cannot tell apart.

An accuracy measured on ``n`` validation images is a binomial proportion; its Wilson score interval stays
inside [0, 1] and keeps its coverage for small ``n`` and for accuracies near 0 or 1, where the normal
approximation (``p +- 1.96 sqrt(p(1-p)/n)``) does not.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

Z95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal


def wilson(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``correct`` successes out of ``n`` trials: ``(low, high)`` in [0, 1].

    ``n == 0`` (no validation images): ``(nan, nan)``."""
    if n <= 0:
        return float("nan"), float("nan")
    p = min(1.0, max(0.0, correct / n))
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(acc: float, n: int) -> list[float]:
    """The 95% interval ``[low, high]`` (4 decimals) of an accuracy ``acc`` measured on ``n`` images."""
    lo, hi = wilson(round(acc * n), n)
    return [round(lo, 4), round(hi, 4)]


def interval_of(section: Any) -> Optional[tuple[float, float]]:
    """The ``val_acc_ci95`` of a summary section (``{"val_acc": .., "val_acc_ci95": [lo, hi]}``), computed from
    ``val_images`` when only that was recorded; None for a record without either (an older run)."""
    if not isinstance(section, dict) or "val_acc" not in section:
        return None
    ci = section.get("val_acc_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return float(ci[0]), float(ci[1])
    n = section.get("val_images")
    if isinstance(n, int) and n > 0:
        lo, hi = accuracy_interval(float(section["val_acc"]), n)
        return lo, hi
    return None


def difference(a: float, ci_a: tuple[float, float], b: float, ci_b: tuple[float, float]) -> tuple[float, float]:
    """95% interval of the difference ``a - b`` of two accuracies from their Wilson intervals (Newcombe's hybrid
    score method, 1998: no other statistics needed, so it works from two ``summary.json`` records).

    It treats the two validation sets as independent; two runs scored on the same images are positively
    correlated, which makes this interval a little wider (more cautious) than a paired test's."""
    (la, ua), (lb, ub) = ci_a, ci_b
    d = a - b
    return d - math.sqrt((a - la) ** 2 + (ub - b) ** 2), d + math.sqrt((ua - a) ** 2 + (b - lb) ** 2)


def indistinguishable(intervals: Sequence[Optional[tuple[float, float]]], accs: Sequence[float]) -> list[str]:
    """For runs with accuracies ``accs`` and 95% intervals: ``"best"`` for the most accurate run, ``"~best"`` for
    each run whose difference from the best has a 95% interval (``difference``) that holds 0 (the validation
    images cannot tell it from the best), ``""`` for the rest and for runs without an interval or accuracy."""
    marks = [""] * len(accs)
    valid = [i for i, a in enumerate(accs) if a == a and intervals[i] is not None]
    if not valid:
        return marks
    best = max(valid, key=lambda i: accs[i])
    for i in valid:
        lo, _ = difference(accs[best], intervals[best], accs[i], intervals[i])  # type: ignore[arg-type]
        marks[i] = "best" if i == best else ("~best" if lo <= 0 else "")
    return marks
