"""Training checkpoints for exact resume: ``last.pt`` carries the trainable state, optimizer,
scheduler, scaler, position, RNG states and the config (nanoGPT-style: a checkpoint carries its config).

Checkpoints hold only tensors and plain Python values and are read with ``weights_only=True``: a
file that holds a pickled object is refused, never executed. Deployable models are separate
safetensors files (``pipeline.models.artifacts``).
"""
from __future__ import annotations

import logging
import pickle
import random
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from .atomic import save_torch


log = logging.getLogger(__name__)


class ResumeError(RuntimeError):
    """A checkpoint cannot be resumed with this config, or cannot be read safely."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state(legacy=False)
    s: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)), "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in s["python"]))
    n = s["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a training checkpoint safely (``weights_only=True``); raise ``ResumeError`` naming the file."""
    how = f"delete {path} to start this stage over"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ResumeError(f"{path} holds pickled Python objects, not only tensors; it was refused and not run "
                          f"({str(exc).splitlines()[0][:200]}). If you did not write it, do not trust it; {how}") from None
    except (EOFError, RuntimeError, OSError, ValueError) as exc:
        raise ResumeError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc)[:200]}); {how}") from None
    if not isinstance(state, dict):
        raise ResumeError(f"{path} is not a distil checkpoint; {how}")
    return state


class CheckpointSaver:
    """Writes ``last.pt`` (every epoch, and on interrupt) under ``folder``, atomically."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.last = self.folder / "last.pt"

    def save(self, state: dict[str, Any]) -> None:
        save_torch(self.last, state)

    def resumable(self, config_hash: str, inputs: Optional[dict[str, str]] = None,
                  rerun_cmd: str = "the same command with resume: never",
                  config_changes: Optional[Callable[[dict[str, Any]], list[str]]] = None) -> Optional[dict[str, Any]]:
        """The ``last.pt`` state if there is one. Refuse one written by a different config, or from other
        inputs (the data or the upstream teacher changed since): resuming it would silently reuse
        what was trained on the old ones. ``config_changes(old_config)`` lists what differs between the config
        the checkpoint carries and this one: it names the changes, and when the hashes differ but it finds none
        (a schema upgrade added keys at their defaults, or a key left the identity) the checkpoint is kept."""
        if not self.last.is_file():
            return None
        state = load_checkpoint(self.last)
        if state.get("config_hash") != config_hash:
            old_config = state.get("config")
            changes = config_changes(old_config) if config_changes and isinstance(old_config, dict) else None
            if changes is None or changes:
                what = (f": {'; '.join(changes[:8])}{f' (and {len(changes) - 8} more)' if len(changes) > 8 else ''}"
                        if changes else f" (hash {str(state.get('config_hash'))[:12]}, now {config_hash[:12]})")
                raise ResumeError(f"{self.last} was written by a different config{what}. Put the config back to "
                                  f"continue it, or start this stage over with: {rerun_cmd}")
            log.info("%s was written by an earlier version of the config schema; every key that decides what is "
                     "computed is the same: resumed", self.last)
        old = state.get("inputs") or {}
        changed = sorted(k for k in set(old) | set(inputs or {}) if old.get(k) != (inputs or {}).get(k))
        if changed:
            raise ResumeError(
                f"{self.last} was trained on other inputs: {', '.join(changed)} changed since (e.g. images added, "
                f"relabelled or edited, or a new teacher). Its results would be stale; start this stage over with: "
                f"{rerun_cmd}"
            )
        return state
