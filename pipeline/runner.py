"""Running a stage as library code: ``run_stage("student", "configs/x.yaml", ["student.epochs=3"])``.

The command line (``pipeline.cli``), the sweep and the benchmarks all run stages through here. ``callbacks``
are called with each epoch's metrics row of every engine the stage runs (a sweep's pruner is one; one may
raise to stop the run after that epoch's checkpoint).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

from .config import load_config

EpochCallback = Callable[[dict[str, Any]], None]


def cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def setup_torch(seed: int) -> None:
    """Seed every RNG; on CPU, share the cores among the processes of this machine (an explicit
    ``OMP_NUM_THREADS``, as launchers and sweep workers set it, is kept)."""
    import random

    import numpy as np
    import torch

    from . import distributed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if not torch.cuda.is_available() and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, cores() // distributed.world()))


def run_stage(stage: str, config: str, overrides: Sequence[str] = (), force: bool = False,
              callbacks: Sequence[EpochCallback] = (), start: Optional[str] = None) -> dict[str, Any]:
    """Run one stage (or ``all``) of ``config`` with ``key=value`` overrides; returns its summary.
    ``force``: start the stage over instead of resuming or reusing it; ``callbacks``: per epoch, ``fn(row)``;
    ``start`` (``all`` only): force that stage and every one after it (``distil all --from <stage>``)."""
    from . import distributed
    from .rundir import RunDir
    from .stages import STAGES, pipeline_order

    if stage == "all":
        order = pipeline_order()
        first = order.index(start) if start else len(order)
        return {name: run_stage(name, config, overrides, force or i >= first, callbacks) for i, name in enumerate(order)}
    cfg = load_config(config, list(overrides))
    if cfg.submit.upload:  # a run meant for Kaggle, any stage: no credentials is found before any work (training,
        # or the submit stage predicting and rewriting the CSV), not after it
        from .submission import check_upload

        check_upload(cfg.submit.competition)
    distributed.init()
    setup_torch(cfg.seed)
    with RunDir(cfg, config, overrides, force=force, callbacks=callbacks) as rd:
        return STAGES.get(stage)(cfg, rd)
