"""TensorBoard event files beside ``metrics.csv``: each epoch's metrics row as scalars (``tensorboard --logdir runs``).

Switched by the config's ``tensorboard`` key: ``auto`` (the default) writes them when the ``tensorboard`` package is
installed, ``true`` requires it, ``false`` writes none. The scalars are the CSV's columns (``train_loss``,
``train_<term>``, ``val_acc``, ``lr``, ``epoch_s``, ...), at step = the 1-based epoch.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Optional, Union

from . import distributed

log = logging.getLogger(__name__)

EVENTS_GLOB = "events.out.tfevents.*"


def available() -> bool:
    """Is the ``tensorboard`` package (which ``torch.utils.tensorboard`` needs) installed?"""
    return importlib.util.find_spec("tensorboard") is not None


def wanted(setting: Union[bool, str]) -> bool:
    """The config's ``tensorboard`` (``auto``, ``true`` or ``false``) as on/off for this environment."""
    return available() if setting == "auto" else bool(setting)


class EpochScalars:
    """An engine callback: writes each epoch's row into TensorBoard event files in ``folder`` (rank 0 only).

    A stage that starts over (its first row is epoch 1) removes the event files of the run before; a resumed
    stage continues them, and its writer purges any events at or after the epoch it resumes at, so the board
    shows each epoch once, as ``metrics.csv`` does."""

    def __init__(self, folder: Path, epochs: int):
        self.folder, self.epochs = folder, epochs
        self.writer: Optional[Any] = None

    def __call__(self, row: dict[str, Any]) -> None:
        if not distributed.is_main():
            return
        step = int(row["epoch"])
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            if step == 1:
                for old in self.folder.glob(EVENTS_GLOB):
                    old.unlink(missing_ok=True)
            self.writer = SummaryWriter(str(self.folder), purge_step=step)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, float(value), step)
        self.writer.flush()
        if step >= self.epochs:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def callbacks_for(setting: Union[bool, str], folder: Path, epochs: int) -> list[EpochScalars]:
    """The TensorBoard callback of a training stage writing to ``folder``, or none when switched off."""
    return [EpochScalars(folder, epochs)] if wanted(setting) else []
