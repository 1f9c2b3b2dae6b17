"""Stages: thin wiring of config -> data -> model -> engine, registered by name in ``STAGES``.

Each is ``run(cfg, rundir) -> summary dict``; ``pipeline=True`` stages run, in ``order``, under
``distil all`` and the Makefile's ``make`` (teacher -> cache -> student -> submit). Stages import the
library, never each other.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..registry import Registry

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import DataLoader

    from ..config import Config
    from ..engine import Engine
    from ..precision import Precision
    from ..rundir import RunDir

STAGES: Registry[Callable[..., dict[str, Any]]] = Registry("stage")


def build_engine(cfg: "Config", rd: "RunDir", stage: str, out: Path, module: "nn.Module", train_dl: "DataLoader",
                 val_dl: "DataLoader", optimizer: Any, scheduler: Any, precision: "Precision",
                 identity: Sequence[str], on_best: Callable[[dict[str, Any]], None],
                 inputs: dict[str, str]) -> "Engine":
    """The ``Engine`` of a training stage (``teacher`` or ``student``: its section of ``cfg`` gives epochs,
    resume, EMA, ...): its checkpoint is keyed by the config sections ``identity`` and the content keys
    ``inputs``; ``on_best(row)`` writes the model to ``out/pending/`` (``RunDir.finish`` switches it in); the run's
    callbacks get every epoch."""
    from ..engine import Engine
    from ..models.artifacts import artifact_ok
    from ..provenance import pending, read_record
    from ..tensorboard_events import callbacks_for

    sec = getattr(cfg, stage)
    new = pending(out)  # the best model so far: pending/ while this run has one, else the deployable one
    # a finished model keeps the config.yaml and metrics.csv that describe it until this run's replaces it
    records = new if read_record(out) is not None else out
    return Engine(module=module, loader=train_dl, val_loader=val_dl, optimizer=optimizer, scheduler=scheduler,
                  epochs=sec.epochs, out_dir=out, config=cfg.to_dict(), config_hash=cfg.digest(*identity),
                  config_changes=lambda old: cfg.changes_since(old, *identity), on_best=on_best,
                  best_ok=lambda: artifact_ok(new if (new / f"{stage}.safetensors").is_file() else out, stage), inputs=inputs,
                  rerun_cmd=rd.command(stage, force=True),
                  precision=precision, resume=sec.resume == "auto" and not rd.force,
                  max_steps_per_epoch=sec.max_steps_per_epoch, resume_cmd=rd.command(stage), sync_bn=sec.sync_bn,
                  compile=sec.compile, ema_decay=sec.ema, live_every=sec.val_live_every,
                  callbacks=[*rd.callbacks, *callbacks_for(cfg.tensorboard, out, sec.epochs)], record_dir=records)


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

__all__ = ["STAGES", "build_engine", "pipeline_order", "ordered"]
