"""Import TensorFlow without its C++ start-up lines.

TensorFlow 2.21 prints "All log messages before absl::InitializeLog() is called are written to STDERR" and the
oneDNN notice from C++ while it loads, whatever TF_CPP_MIN_LOG_LEVEL says, so Python cannot filter them. `install()`
(called by `bench/__init__`) adds an import hook: whoever imports TensorFlow first (keras, keras_tuner, bench itself),
it loads with the process's stderr file descriptor pointed at /dev/null, then stderr is restored. Python exceptions
still raise, and nothing loads TensorFlow earlier than before.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType


class _SilentLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        sys.stderr.flush()
        os.dup2(devnull, 2)
        try:
            self.loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: find the real spec, then wrap its loader
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _SilentLoader(spec.loader)
        return spec


def install() -> None:
    if "tensorflow" not in sys.modules and not any(isinstance(f, _TensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowFinder())
