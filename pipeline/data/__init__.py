"""Data: layouts (HW13, class folders), robust image decoding, the decoded-pixel cache, views."""
from .layout import DataLayout, LayoutError, Split, discover
from .pixels import PixelCache, BadImageError, build_pixel_cache

__all__ = ["DataLayout", "LayoutError", "Split", "discover", "PixelCache", "BadImageError", "build_pixel_cache"]
