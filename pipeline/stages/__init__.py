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


def _import_all() -> None:
    """Import every module of this package: each registers its stage (a new stage is one new file)."""
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


_import_all()

__all__ = ["STAGES", "pipeline_order", "ordered"]
