"""Lazy re-exports for packages whose members import TensorFlow or MLflow: `python -m bench search --help` and a
bad parameter must answer in well under 2 s, so a package's `__init__` names its heavy members here and Python
imports their module on first attribute access (PEP 562), as scipy and scikit-image do."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module `__getattr__` that resolves each name of `exports` (module path -> names) on first use."""
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home[name]), name)

    return __getattr__


def names(exports: dict[str, tuple[str, ...]]) -> list[str]:
    """Every name of `exports`, for `__all__`."""
    return [name for members in exports.values() for name in members]
