"""Stages: thin wiring of config -> data -> model -> engine, registered by name in ``STAGES``.

Each is ``run(cfg, rundir) -> summary dict``; ``pipeline=True`` stages run, in ``order``, under
``distil all`` and the Makefile's ``make`` (teacher -> cache -> student -> submit). Stages import the
library, never each other.
"""
from __future__ import annotations

from typing import Any, Callable

from ..registry import Registry

STAGES: Registry[Callable[..., dict[str, Any]]] = Registry("stage")


def pipeline_order() -> list[str]:
    """The stages ``distil all`` runs, in order."""
    names = [n for n in STAGES if STAGES.meta(n).get("pipeline")]
    return sorted(names, key=lambda n: STAGES.meta(n)["order"])


def ordered() -> list[str]:
    """Every stage, pipeline stages first in their order, then the tools."""
    return sorted(STAGES, key=lambda n: (STAGES.meta(n).get("order", 99), n))


from . import cache, export, params, report, student, submit, teacher  # noqa: E402,F401  (fill the registry)

__all__ = ["STAGES", "pipeline_order", "ordered"]
