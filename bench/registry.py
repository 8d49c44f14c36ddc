"""One registry shape for every pluggable kind: backbones, model families, dataset layouts, engines, samplers,
pruners. Each kind has a frozen spec dataclass with a `name`; `Registry.get` fails with a one-line error that
lists what exists, and tests parametrize over `Registry.names()` so that a new entry is tested by existing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from bench.errors import BenchError, ConfigError


class Named(Protocol):
    name: str


S = TypeVar("S", bound=Named)


class Registry(Generic[S]):
    """Named specs of one kind. `decorator(**fields)` registers a function as the spec's `field` (builder,
    loader …) with the other fields given; `register(spec)` registers a spec built by hand."""

    def __init__(self, kind: str, spec: type[S], *, field: str = "build", error: type[BenchError] = ConfigError) -> None:
        self.kind, self.spec, self.field, self.error = kind, spec, field, error
        self._specs: dict[str, S] = {}

    def register(self, spec: S) -> S:
        if spec.name in self._specs:
            raise ValueError(f"{self.kind} {spec.name!r} is registered twice")
        self._specs[spec.name] = spec
        return spec

    def decorator(self, name: str, **fields: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.register(self.spec(name=name, **{self.field: fn}, **fields))
            return fn

        return add

    def get(self, name: str) -> S:
        if name not in self._specs:
            raise self.error(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._specs[name]

    def names(self) -> list[str]:
        """In registration order."""
        return list(self._specs)

    def specs(self) -> list[S]:
        return [self._specs[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
