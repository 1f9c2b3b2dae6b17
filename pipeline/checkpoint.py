"""Checkpoints that carry their config and everything needed to resume exactly.

``CheckpointSaver`` keeps ``last.pt`` (every epoch, and on interrupt) and ``best.pt`` (best
validation metric) in one folder, each written atomically.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .atomic import save_torch


class ResumeError(RuntimeError):
    """A checkpoint cannot be resumed with this config."""


def rng_state() -> dict[str, Any]:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by this pipeline (a pickle: only load files you trust)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ResumeError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); delete it and rerun the stage") from None


class CheckpointSaver:
    """Writes ``last.pt`` and ``best.pt`` under ``folder``; higher ``metric`` is better."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.last = self.folder / "last.pt"
        self.best = self.folder / "best.pt"

    def save(self, state: dict[str, Any], *, is_best: bool) -> None:
        save_torch(self.last, state)
        if is_best:
            save_torch(self.best, state)

    def resumable(self, config_hash: str) -> Optional[dict[str, Any]]:
        """The ``last.pt`` state if there is one; refuse one written by a different config."""
        if not self.last.is_file():
            return None
        state = load_checkpoint(self.last)
        if state.get("config_hash") != config_hash:
            raise ResumeError(
                f"{self.last} was written by a different config (hash {str(state.get('config_hash'))[:12]}, "
                f"now {config_hash[:12]}). Delete {self.folder} to start over, put the config back, "
                "or set resume: never for this stage"
            )
        return state
