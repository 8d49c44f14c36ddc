"""The benchmark configuration: every parameter, declared once with its rule and default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.benchmark.contenders import select
from bench.errors import ConfigError
from bench.images import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from bench.metrics import OBJECTIVES
from bench.search import ENGINES
from bench.search.budget import UNITS as BUDGET_UNITS, UNLIMITED_TRIALS
from bench.validation import Rules, at_least, check, make, message, one_of, satisfies

SHRUNK_IMAGE_SIZE = 32  # data without a card (the synthetic default among them) load this small, to fit 15 minutes
BUDGET_RULE = "a whole number of epochs or trials >= 1, or seconds > 0 with budget_unit=seconds"


@dataclass(frozen=True)
class BenchmarkConfig:
    # Shrunk so that 3 seeds of the default set finish within 15 minutes on 2 CPU cores: 800 synthetic images at 32 px.
    data: str = "synthetic?n_per_class=100"
    image_size: int = 0  # 0 = the dataset card's image_size, else SHRUNK_IMAGE_SIZE
    epochs: int = 3  # per reference fit and per search trial
    # Per search contender and seed: 18 epochs is 6 full trials (more with pruning), 3 of them TPE's random start-up.
    budget: float = 18.0
    budget_unit: str = "epochs"  # epochs (summed over all trials, pruned included) | trials | seconds
    repeats: int = 3  # seeds per stochastic contender (sampler, weight init, data order, augmentation); data fixed
    contenders: str = "default"  # default | all | a comma list of names
    seed: int = 0  # the data and splits; repeat r runs with seed + r
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
        if self.budget_unit != "seconds" and not float(self.budget).is_integer():
            raise ConfigError(message("budget", BUDGET_RULE, self.budget))
        chosen = select(self.contenders)  # unknown names fail here, before any data is loaded
        unable = [c.name for c in chosen if c.kind == "search"
                  and self.budget_unit not in ENGINES.get(c.config.get("engine", "optuna")).budget_units]
        if unable:
            raise ConfigError(f"contenders {', '.join(unable)} cannot stop on a budget in {self.budget_unit}: choose "
                              f"another budget_unit, or contenders without them")
        weights_for(self.weights, None)
        if self.image_size == 0:  # after the checks: a bad parameter answers before the data stack loads
            from bench.data.loading import default_image_size
            object.__setattr__(self, "image_size", default_image_size(self.data, SHRUNK_IMAGE_SIZE))

    @property
    def seeds(self) -> list[int]:
        return [self.seed + r for r in range(self.repeats)]

    def search_budget(self) -> dict[str, float]:
        """The SearchConfig fields that set a search contender's budget; the other units are unlimited."""
        return {"epochs": {"epoch_budget": int(self.budget), "trials": UNLIMITED_TRIALS},
                "trials": {"trials": int(self.budget)},
                "seconds": {"timeout": float(self.budget), "trials": UNLIMITED_TRIALS}}[self.budget_unit]


RULES: Rules = (
    ("budget", satisfies(lambda v: isinstance(v, (int, float)) and v > 0, BUDGET_RULE)),
    ("budget_unit", one_of(BUDGET_UNITS)),
    ("image_size", satisfies(lambda v: v == 0 or MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE,
                             f"0 (the dataset card's) or an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]")),
    ("epochs", at_least(1)),
    ("repeats", at_least(1)),
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
