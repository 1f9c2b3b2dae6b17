"""Data: layouts (HW13, class folders), robust image decoding, the decoded-pixel cache, views, and
the splits a run reads."""
from .layout import DataLayout, LayoutError, Split, discover
from .pixels import BadImageError, PixelCache, build_pixel_cache
from .sets import DistillSet, distill_set, open_data, pixels

__all__ = ["DataLayout", "LayoutError", "Split", "discover", "PixelCache", "BadImageError", "build_pixel_cache",
           "DistillSet", "distill_set", "open_data", "pixels"]
