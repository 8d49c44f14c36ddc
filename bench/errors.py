"""User-facing errors: the CLI prints their message as one line and exits with their status; and the one way a bad
parameter is reported (`check` against a table of rules). The served model carries this module, so it imports
nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class BenchError(Exception):
    """Bad input or configuration that the user can fix; never printed with a traceback."""

    exit_code = 2


class DataError(BenchError):
    """A dataset that cannot be loaded or trained on."""


class SpaceError(BenchError):
    """A search-space YAML file with a bad key, type or range."""


class ConfigError(BenchError):
    """A bad command-line or MLproject parameter."""


@dataclass(frozen=True)
class Constraint:
    """`test(value)` says whether a value is allowed; `rule` says so in words ("an integer >= 1")."""

    test: Callable[[Any], bool]
    rule: str


Rules = tuple[tuple[str, Constraint], ...]


def message(name: str, rule: str, value: Any) -> str:
    return f"The '{name}' parameter must be {rule}. Got {value!r} instead."


def check(rules: Rules, values: Any, *, error: type[BenchError] = ConfigError) -> None:
    """Raise `error` for the first rule that `values` (a mapping or an object with attributes) breaks."""
    for name, constraint in rules:
        value = values[name] if isinstance(values, Mapping) else getattr(values, name)
        if not constraint.test(value):
            raise error(message(name, constraint.rule, value))
