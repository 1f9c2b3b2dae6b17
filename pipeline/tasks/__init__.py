"""Trainable modules the engine trains: ``forward(batch) -> {"loss": ..., <term>: ...}`` keeps every
trainable op inside (so DDP can wrap it), ``logits(image)`` is what validation scores."""
from .classification import Classification
from .distillation import Distiller

__all__ = ["Classification", "Distiller"]
