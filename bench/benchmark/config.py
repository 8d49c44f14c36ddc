"""The benchmark configuration: every parameter, declared once with its rule and default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.benchmark.contenders import select
from bench.errors import ConfigError
from bench.metrics import OBJECTIVES
from bench.search import ENGINES
from bench.validation import Rules, at_least, check, make, message, one_of, satisfies

BUDGET_UNITS = ("trials", "seconds")
BUDGET_RULE = "a whole number of trials >= 1, or seconds > 0 with budget_unit=seconds"


@dataclass(frozen=True)
class BenchmarkConfig:
    data: str = "synthetic"
    image_size: int = 64
    epochs: int = 4  # per reference fit and per search trial
    budget: float = 4.0  # per search contender: trials, or wall-clock seconds (budget_unit)
    budget_unit: str = "trials"
    contenders: str = "default"  # default | all | a comma list of names
    seed: int = 0
    experiment: str = "hemabench"
    registered_model: str = "bloodcell-classifier"
    register: bool = False
    weights: str = "none"  # backbones: none | imagenet | a weights file, or per backbone: mobilenet_v2=<file>,resnet50=imagenet
    objective: str = "val_f1_macro"
    storage: str = ""
    n_bootstrap: int = 1000
    verbose: int = 0

    def __post_init__(self) -> None:
        check(RULES, self)
        if self.budget_unit == "trials" and not float(self.budget).is_integer():
            raise ConfigError(message("budget", BUDGET_RULE, self.budget))
        chosen = select(self.contenders)  # unknown names fail here, before any data is loaded
        untimed = [c.name for c in chosen if c.kind == "search" and not ENGINES.get(c.config.get("engine", "optuna")).honours_timeout]
        if self.budget_unit == "seconds" and untimed:
            raise ConfigError(f"contenders {', '.join(untimed)} cannot stop on a wall-clock budget (their engine has no "
                              f"timeout): use budget_unit=trials, or choose contenders without them")
        weights_for(self.weights, None)


RULES: Rules = (
    ("budget", satisfies(lambda v: isinstance(v, (int, float)) and v > 0, BUDGET_RULE)),
    ("budget_unit", one_of(BUDGET_UNITS)),
    ("epochs", at_least(1)),
    ("n_bootstrap", at_least(100)),
    ("objective", one_of(OBJECTIVES)),
    ("contenders", satisfies(lambda v: bool(v.strip()), "'default', 'all' or a comma list of contender names")),
)


def weights_for(spec: str, backbone: str | None) -> str:
    """The weights one backbone gets: `spec` itself (none, imagenet, a path) for every backbone, or its entry in
    `name=value,name=value` (a backbone not listed gets none)."""
    if "=" not in spec:
        return spec
    pairs = [part.split("=", 1) for part in spec.split(",") if part.strip()]
    bad = [part for part in pairs if not part[0].strip() or not part[1].strip()]
    if bad:
        raise ConfigError(f"The 'weights' parameter must be none, imagenet, a path, or backbone=value pairs separated by "
                          f"commas. Got {spec!r} instead.")
    return {name.strip(): value.strip() for name, value in pairs}.get(backbone or "", "none")


def make_benchmark_config(**values: Any) -> BenchmarkConfig:
    """A BenchmarkConfig from command-line text or typed values; None means the default."""
    return make(BenchmarkConfig, values)
