"""The engine registry: an `EngineSpec` per search engine, declaring what the rest of HemaBench must know about
it without importing it (KerasTuner alone costs ~4 s to import)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from bench.registry import Registry
from bench.search.budget import UNITS

if TYPE_CHECKING:  # type names only: the engines module is imported by the context module, not the reverse
    from bench.search.config import SearchConfig
    from bench.search.context import SearchContext


class Engine(Protocol):
    """What an engine module provides: `run(ctx)` runs the study's trials through `ctx.runner(...)`, so every
    engine logs the same runs, metrics and artifacts; `prepare(config)` (shared-storage engines only) creates
    the study before worker processes start."""

    def run(self, ctx: SearchContext) -> None: ...


@dataclass(frozen=True)
class EngineSpec:
    """`module`: the engine's module (imported on use). `shared_storage`: several processes can work on one study
    (it has `prepare`). `budget_units`: the `bench.search.budget` units it stops on. `options`: its own SearchConfig
    fields and their allowed values."""

    name: str
    module: str
    shared_storage: bool = False
    budget_units: tuple[str, ...] = UNITS
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def run(self, ctx: SearchContext) -> None:
        self.load().run(ctx)

    def prepare(self, config: SearchConfig) -> None:
        prepare: Callable[[SearchConfig], None] | None = getattr(self.load(), "prepare", None)
        if prepare is not None:
            prepare(config)


ENGINES: Registry[EngineSpec] = Registry("engine", EngineSpec)


def list_engines() -> list[str]:
    return ENGINES.names()
