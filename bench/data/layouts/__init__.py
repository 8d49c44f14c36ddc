"""Dataset layouts: a registry of (detect, load) pairs that turn a `--data` string into a `Source`.

The registry and the `Source` type live in `base`; each module here registers its layouts when this package
imports it. Adding a layout is one decorated function in one of these modules (or a new module listed below).
"""

from bench.data.layouts import arrays, cards, folders  # noqa: F401  (each registers its layouts)
from bench.data.layouts.base import (
    FILE_COLUMNS, LAYOUTS, Layout, Source, content_fingerprint, detect_layout, get_layout, list_layouts, register_layout,
)

__all__ = ["FILE_COLUMNS", "LAYOUTS", "Layout", "Source", "content_fingerprint", "detect_layout", "get_layout",
           "list_layouts", "register_layout"]
