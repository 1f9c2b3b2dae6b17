"""distil: fine-tune a timm teacher, cache it, distil a budgeted student, submit to Kaggle."""
__version__ = "0.1.0"
