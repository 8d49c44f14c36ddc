"""Search engines. Each module has `run(ctx: bench.search.SearchContext) -> None` and runs its trials through
`ctx.runner(...)`, so that every engine logs the same runs, metrics and artifacts."""

from __future__ import annotations

import importlib
from typing import Any, Callable

# Engine name -> module; imported on use (keras_tuner alone costs ~4 s to import).
ENGINES: dict[str, str] = {
    "optuna": "bench.engines.optuna_engine",
    "keras-tuner": "bench.engines.keras_tuner_engine",
}


def engine(name: str) -> Callable[[Any], None]:
    return importlib.import_module(ENGINES[name]).run
