"""The search configuration: every MLproject / CLI parameter, declared once with its rule and default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import paths
from bench.engines import ENGINES
from bench.errors import ConfigError
from bench.metrics import OBJECTIVES

SAMPLERS = ("tpe", "random", "cmaes", "qmc")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
TUNERS = ("random", "bayesian", "hyperband")  # engine=keras-tuner


@dataclass(frozen=True)
class SearchConfig:
    data: str = "synthetic"
    space: str = "scratch_cnn"
    trials: int = 10
    timeout: float = 0.0  # seconds for the whole search; 0 = no limit
    epochs: int = 10
    image_size: int = 64
    seed: int = 0
    experiment: str = "hemabench"
    registered_model: str = "bloodcell-classifier"
    storage: str = ""  # Optuna storage URL or journal path; "" = optuna.journal beside the tracking DB
    study: str = ""  # "" = <space>-<data>-<image_size>
    sampler: str = "tpe"
    pruner: str = "median"
    objective: str = "val_f1_macro"
    engine: str = "optuna"
    # KerasTuner oracle when engine=keras-tuner: random | bayesian | hyperband. Hyperband by default: KerasTuner has
    # no per-epoch pruning, and on the default budget random search took 417 s against hyperband's 153 s (mobilenet_v2).
    tuner: str = "hyperband"
    weights: str = "imagenet"  # pretrained backbones: imagenet | none | path to a weights file
    register: bool = True
    workers: int = 1
    max_consecutive_failures: int = 5
    retries: int = 1  # how often a trial whose process died is run again
    verbose: int = 0

    def __post_init__(self) -> None:
        rules: list[tuple[str, bool, str]] = [
            ("trials", self.trials >= 1, "an integer >= 1"),
            ("timeout", self.timeout >= 0, "a number of seconds >= 0 (0 means no limit)"),
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("image_size", 16 <= self.image_size <= 1024, "an integer between 16 and 1024"),
            ("sampler", self.sampler in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
            ("pruner", self.pruner in PRUNERS, f"one of {', '.join(PRUNERS)}"),
            ("objective", self.objective in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
            ("engine", self.engine in ENGINES, f"one of {', '.join(ENGINES)}"),
            ("tuner", self.tuner in TUNERS, f"one of {', '.join(TUNERS)}"),
            ("workers", self.workers >= 1, "an integer >= 1"),
            ("max_consecutive_failures", self.max_consecutive_failures >= 1, "an integer >= 1"),
            ("retries", self.retries >= 0, "an integer >= 0"),
            ("experiment", bool(self.experiment.strip()), "a non-empty name"),
            ("registered_model", bool(self.registered_model.strip()), "a non-empty name"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"The '{name}' parameter must be {rule}. Got {getattr(self, name)!r} instead.")

    @property
    def study_name(self) -> str:
        if self.study:
            return self.study
        data = Path(self.data).stem if ("/" in self.data or self.data.endswith((".yaml", ".npz"))) else self.data
        # Engines keep separate studies: their trial numbers and resume state are their own.
        engine = "" if self.engine == "optuna" else f"-{self.engine}"
        return f"{Path(self.space).stem}-{data}-{self.image_size}px{engine}"

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        uri = paths.tracking_uri()
        beside = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path.cwd()
        return str(beside / "optuna.journal")


def coerce(name: str, value: Any) -> Any:
    """Turn a command-line string into the field's type, with a one-line error naming the parameter."""
    field = {f.name: f for f in dataclasses.fields(SearchConfig)}[name]
    kind = type(field.default)
    if isinstance(value, kind):
        return value
    try:
        if kind is bool:
            lowered = str(value).strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind is int:  # MLproject has no int type: "10.0" arrives for 10
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"The '{name}' parameter must be of type {kind.__name__}. Got {value!r} instead.") from None


def make_config(**values: Any) -> SearchConfig:
    known = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown parameter {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}")
    return SearchConfig(**{k: coerce(k, v) for k, v in values.items() if v is not None})
