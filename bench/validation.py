"""Declared validation: each config declares its rules once, as a table of (name, constraint), checked by
`bench.errors.check`, so every failure reads in scikit-learn's words: "The 'x' parameter must be <rule>. Got <value>
instead." This module holds the common constraints.

`coerce` is the one string-to-type conversion for values that arrive as text (command line, MLproject,
environment variables).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from bench.errors import ConfigError, Constraint, Rules, check, message  # noqa: F401  (one import for configs)

T = TypeVar("T")
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(low: float, *, integer: bool = True) -> Constraint:
    kind = _is_int if integer else _is_number
    return Constraint(lambda v: kind(v) and v >= low, f"{'an integer' if integer else 'a number'} >= {low:g}")


def between(low: float, high: float, *, integer: bool = True) -> Constraint:
    kind = _is_int if integer else _is_number
    what = "an integer" if integer else "a number"
    return Constraint(lambda v: kind(v) and low <= v <= high, f"{what} between {low:g} and {high:g}")


def one_of(options: Iterable[Any]) -> Constraint:
    options = tuple(options)
    return Constraint(lambda v: v in options, f"one of {', '.join(map(str, options))}")


def non_empty() -> Constraint:
    return Constraint(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty name")


def satisfies(test: Callable[[Any], bool], rule: str) -> Constraint:
    return Constraint(test, rule)


def coerce(name: str, value: Any, kind: type) -> Any:
    """`value` as `kind` (bool, int, float, str): "10.0" is the int 10 (MLproject has no int type), "yes"/"no"
    are booleans. Raises ConfigError naming the parameter."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            lowered = str(value).strip().lower()
            if lowered not in TRUE + FALSE:
                raise ValueError
            return lowered in TRUE
        if kind is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"The '{name}' parameter must be of type {kind.__name__}. Got {value!r} instead.") from None


def make(cls: type[T], values: Mapping[str, Any]) -> T:
    """Build the config dataclass `cls` from text or typed values: unknown names and bad types are one line;
    `None` means "use the default"."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown parameter {sorted(unknown)[0]!r}; known: {', '.join(sorted(fields))}")
    return cls(**{k: coerce(k, v, type(fields[k].default)) for k, v in values.items() if v is not None})
