"""distil: fine-tune a timm teacher, cache it, distil a budgeted student, submit to Kaggle.

From Python: ``from pipeline import run; run("teacher", "configs/demo.yaml", ["teacher.epochs=1"])`` returns the
stage's summary (``pipeline.api``).
"""
__version__ = "0.1.0"

from .api import run  # noqa: E402  (light: imports nothing heavy until a stage runs)

__all__ = ["run", "__version__"]
