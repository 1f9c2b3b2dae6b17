"""The Python API, for notebooks and scripts: ``run("teacher", "configs/demo.yaml", ["teacher.epochs=1"])``.

It does what ``distil <stage> --config <config> <overrides>`` does (same reuse, refusals and resume), sets up
logging the way the command line does (once), and returns the stage's summary instead of printing it. Errors
are raised as the library's exceptions (``ConfigError``, ``BudgetError``, ...), each with the message the
command line prints.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Sequence

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool = False) -> logging.Logger:
    """Show the pipeline's INFO lines (DEBUG with ``verbose``) on stderr, as the command line does.

    Only the ``pipeline`` logger is touched, and only where nothing is set up yet: a handler is added when neither
    it nor the root logger has one (calling this again adds none), and its level is set when it has none."""
    logger = logging.getLogger("pipeline")
    if verbose:
        logger.setLevel(logging.DEBUG)
    elif logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        logger.addHandler(handler)
    return logger


def run(stage: str, config: str, overrides: Sequence[str] = (), force: bool = False, verbose: bool = False,
        callbacks: Sequence[Callable[[dict[str, Any]], None]] = ()) -> dict[str, Any]:
    """Run one stage (``teacher``, ``cache``, ``student``, ``submit``, ``export``, ``report``, ``params``, or ``all``)
    of ``config`` (a YAML path) with ``key=value`` ``overrides``; returns the stage's summary (for ``all``: one per
    stage, by name). ``force`` starts the stage over instead of resuming or reusing it; ``callbacks`` are called with
    each epoch's metrics row (a dict, as ``metrics.csv`` holds it)."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a list of key=value strings, e.g. [{overrides!r}], not one string")
    setup_logging(verbose)
    from .runner import run_stage

    return run_stage(stage, config, list(overrides), force, callbacks)
