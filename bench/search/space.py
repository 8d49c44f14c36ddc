"""Search spaces are YAML data; this module validates them and turns them into engine suggestions.

A space file (`search_spaces/<name>.yaml`)::

    name: scratch_cnn
    family: scratch_cnn            # the model builder (bench.models registry)
    description: ...
    params:
      n_blocks: {type: int, low: 2, high: 5, default: 3}
      filters: {type: categorical, choices: [16, 32, 64], default: [16, 32, 64], repeat: n_blocks}
      momentum: {type: float, low: 0.5, high: 0.99, default: 0.9, when: {optimizer: sgd}}
      epochs_warmup: 2             # a bare value is fixed

Conditions: `repeat: <int param>` makes `filters_1 … filters_<high>`, where `filters_i` exists only
when `i <= n_blocks` (a list default gives each repeat its own; the last repeats); `when: {param: value | [values]}` makes a parameter exist only for those values.
Every parameter has a default, so `defaults(space)` is a definite model (KerasTuner's habit).

Cost ceilings (optional top-level keys, positive numbers): `max_mflops_per_image` rejects a trial whose model
needs more forward-pass MFLOPs per image before it trains; `max_seconds_per_epoch` stops it in its first epoch
(estimated from its first batches). Either ends the trial PRUNED with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import yaml

from bench import paths
from bench.errors import SpaceError

TYPE_KEYS: dict[str, set[str]] = {
    "int": {"low", "high", "step", "log"},
    "float": {"low", "high", "step", "log"},
    "categorical": {"choices"},
}
COMMON_KEYS = {"type", "default", "repeat", "when", "help"}
COST_KEYS = ("max_mflops_per_image", "max_seconds_per_epoch")  # per-trial ceilings (bench.training.cost)
SPACE_KEYS = {"name", "family", "description", "params", "allowed_image_sizes", "backbone", *COST_KEYS}


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # int | float | categorical | fixed
    default: Any
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    repeat: str | None = None
    index: int | None = None  # position within a repeat (1-based)

    def active(self, values: dict[str, Any]) -> bool:
        if self.repeat is not None and not (self.repeat in values and self.index <= values[self.repeat]):
            return False
        return all(key in values and values[key] in allowed for key, allowed in self.when.items())


@dataclass(frozen=True)
class Space:
    name: str
    family: str
    params: tuple[Param, ...]  # in dependency order: a parameter follows those its conditions name
    description: str = ""
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [p.name for p in self.params]


def _fail(where: str, message: str) -> None:
    raise SpaceError(f"{where}: {message}")


def _check_param(where: str, name: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        return {"type": "fixed", "default": spec}
    kind = spec.get("type")
    if kind not in TYPE_KEYS:
        _fail(where, f"parameter '{name}' must have type one of {sorted(TYPE_KEYS)}; got {kind!r}")
    unknown = set(spec) - TYPE_KEYS[kind] - COMMON_KEYS
    if unknown:
        allowed = sorted(TYPE_KEYS[kind] | COMMON_KEYS)
        _fail(where, f"parameter '{name}' has unknown key {sorted(unknown)[0]!r}; allowed keys for {kind}: {allowed}")
    if "default" not in spec:
        _fail(where, f"parameter '{name}' must have a default")
    if isinstance(spec["default"], list):  # a repeated parameter may give one default per repeat
        if "repeat" not in spec or not spec["default"]:
            _fail(where, f"parameter '{name}' has a list default, which needs 'repeat' and at least one value")
        for value in spec["default"]:
            _check_param(where, name, {**spec, "default": value})
        return spec
    default = spec["default"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            _fail(where, f"parameter '{name}' must list at least one choice; got {choices!r}")
        if default not in choices:
            _fail(where, f"parameter '{name}' default must be one of its choices {choices}; got {default!r}")
        return spec
    for key in ("low", "high"):
        if not isinstance(spec.get(key), (int, float)) or isinstance(spec.get(key), bool):
            _fail(where, f"parameter '{name}' must have a numeric '{key}'; got {spec.get(key)!r}")
    low, high = spec["low"], spec["high"]
    if kind == "int" and not all(float(v).is_integer() for v in (low, high)):
        _fail(where, f"parameter '{name}' is int, so low and high must be integers; got low={low}, high={high}")
    if not low < high:
        _fail(where, f"parameter '{name}' must have low < high; got low={low}, high={high}")
    if spec.get("log") and low <= 0:
        _fail(where, f"parameter '{name}' is log-scaled, so low must be > 0; got low={low}")
    if spec.get("log") and spec.get("step") is not None:
        _fail(where, f"parameter '{name}' cannot have both log and step")
    if not isinstance(default, (int, float)) or isinstance(default, bool) or not low <= default <= high:
        _fail(where, f"parameter '{name}' default must lie in [{low}, {high}]; got {default!r}")
    return spec


def _as_choices(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def parse_space(raw: Any, *, where: str = "search space", path: Path | None = None) -> Space:
    """Validate a loaded YAML document and build a `Space`; every problem is one `SpaceError` line."""
    if not isinstance(raw, dict):
        _fail(where, f"must be a mapping with keys {sorted(SPACE_KEYS)}; got {type(raw).__name__}")
    unknown = set(raw) - SPACE_KEYS
    if unknown:
        _fail(where, f"unknown top-level key {sorted(unknown)[0]!r}; allowed: {sorted(SPACE_KEYS)}")
    for key in ("name", "family", "params"):
        if key not in raw:
            _fail(where, f"missing required key '{key}'")
    if not isinstance(raw["params"], dict) or not raw["params"]:
        _fail(where, "'params' must be a non-empty mapping of parameter name to spec")
    for key in COST_KEYS:
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            _fail(where, f"'{key}' must be a positive number; got {value!r}")
    specs = {name: _check_param(where, str(name), spec) for name, spec in raw["params"].items()}
    params: list[Param] = []
    for name, spec in specs.items():
        when = spec.get("when") or {}
        if not isinstance(when, dict):
            _fail(where, f"parameter '{name}' 'when' must map parameter names to values; got {when!r}")
        for other in when:
            if other not in specs or other == name:
                _fail(where, f"parameter '{name}' 'when' names unknown parameter {other!r}")
        repeat = spec.get("repeat")
        if repeat is not None and (repeat not in specs or specs[repeat]["type"] != "int"):
            _fail(where, f"parameter '{name}' 'repeat' must name an int parameter; got {repeat!r}")
        common = dict(
            type=spec["type"],
            default=spec["default"],
            low=spec.get("low"),
            high=spec.get("high"),
            step=spec.get("step"),
            log=bool(spec.get("log", False)),
            choices=tuple(spec.get("choices", ())),
            when={k: _as_choices(v) for k, v in when.items()},
            repeat=repeat,
        )
        if repeat is None:
            params.append(Param(name=name, **common))
        else:
            count = int(specs[repeat]["high"])
            per_repeat = spec["default"] if isinstance(spec["default"], list) else [spec["default"]]
            for i in range(1, count + 1):
                common["default"] = per_repeat[min(i, len(per_repeat)) - 1]
                params.append(Param(name=f"{name}_{i}", index=i, **common))
    ordered = _dependency_order(params, where)
    extra = {k: v for k, v in raw.items() if k not in {"name", "family", "description", "params"}}
    return Space(
        name=str(raw["name"]),
        family=str(raw["family"]),
        params=tuple(ordered),
        description=str(raw.get("description", "")),
        path=path,
        extra=extra,
    )


def _dependency_order(params: list[Param], where: str) -> list[Param]:
    by_name = {p.name: p for p in params}
    ordered: list[Param] = []
    state: dict[str, str] = {}

    def visit(p: Param) -> None:
        if state.get(p.name) == "done":
            return
        if state.get(p.name) == "visiting":
            _fail(where, f"parameter '{p.name}' has a circular condition")
        state[p.name] = "visiting"
        for dep in [*p.when, *([p.repeat] if p.repeat else [])]:
            visit(by_name[dep])
        state[p.name] = "done"
        ordered.append(p)

    for p in params:
        visit(p)
    return ordered


def space_path(name_or_path: str) -> Path:
    """A space name (`scratch_cnn`) resolves in `search_spaces/`; anything with a suffix is a path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    return paths.SEARCH_SPACES_DIR / f"{name_or_path}.yaml"


def list_spaces() -> list[str]:
    return sorted(p.stem for p in paths.SEARCH_SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str) -> Space:
    path = space_path(name_or_path)
    if not path.is_file():
        raise SpaceError(f"search space '{name_or_path}' not found at {path}; available: {', '.join(list_spaces())}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise SpaceError(f"{path}:{line} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_space(raw, where=str(path), path=path)


def resolve(space: Space, pick: Callable[[Param], Any]) -> dict[str, Any]:
    """Walk the space in dependency order, asking `pick` for each active parameter's value."""
    values: dict[str, Any] = {}
    for p in space.params:
        if p.active(values):
            values[p.name] = p.default if p.type == "fixed" else pick(p)
    return values


def defaults(space: Space) -> dict[str, Any]:
    return resolve(space, lambda p: p.default)


def _on_step(value: float, step: float | None) -> float:
    """0.8999999999999999 -> 0.9 for a 0.1 step: log what the user wrote in the YAML."""
    if not step:
        return value
    decimals = max(0, -Decimal(str(step)).as_tuple().exponent)
    return round(value, decimals)


def suggest_optuna(space: Space, trial: Any) -> dict[str, Any]:
    """Optuna suggestions; conditional parameters are only suggested when active."""

    def pick(p: Param) -> Any:
        if p.type == "categorical":
            return trial.suggest_categorical(p.name, list(p.choices))
        if p.type == "int":
            return trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        value = trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step, log=p.log)
        return _on_step(value, p.step)

    return resolve(space, pick)


def suggest_keras_tuner(space: Space, hp: Any) -> dict[str, Any]:
    """KerasTuner `hp.*` with the same names, ranges and defaults; inactive parameters are not declared."""

    def pick(p: Param) -> Any:
        if p.type == "categorical":
            return hp.Choice(p.name, list(p.choices), default=p.default)
        sampling = "log" if p.log else "linear"
        if p.type == "int":
            return hp.Int(p.name, int(p.low), int(p.high), step=int(p.step or 1), sampling=sampling, default=int(p.default))
        return hp.Float(p.name, float(p.low), float(p.high), step=p.step, sampling=sampling, default=float(p.default))

    return resolve(space, pick)
