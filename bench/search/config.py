"""The search configuration: every MLproject / CLI parameter, declared once with its rule and default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import paths
from bench.errors import ConfigError
from bench.images import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from bench.metrics import OBJECTIVES
from bench.search.engines import ENGINES
from bench.serving.tta import TRANSFORMS
from bench.validation import Rules, at_least, between, check, make, non_empty, one_of, satisfies

@dataclass(frozen=True)
class SearchConfig:
    data: str = "synthetic"
    space: str = "scratch_cnn"
    trials: int = 10
    timeout: float = 0.0  # seconds for the whole search; 0 = no limit
    epoch_budget: int = 0  # training epochs summed over all trials, pruned ones included; 0 = no limit (bench.search.budget)
    epochs: int = 10
    image_size: int = 0  # 0 = the dataset card's image_size, else 64 (bench.data.loading.default_image_size)
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
    # The study's first trials are known-good setups (bench.search.warm_start: an earlier study's best on the same
    # dataset, the reference setups, the space's defaults). Off, the sampler alone chooses (the benchmark's searches:
    # a contender is its search strategy, and must not start from another contender's best).
    warm_start: bool = True
    # After the trials, greedy ensemble selection over the best trials' models (bench.search.ensemble); registered
    # instead of the best trial only when it beats it on validation.
    ensemble: bool = True
    tta: str = "none"  # test-time augmentation at evaluation and serving: none | flip | rot90 | d4 (bench.serving.tta)
    # Data-fraction fidelity: the share of the training split each search trial trains on (bench.training.subset: seeded,
    # class-stratified, whole groups, fixed for the study; validation stays whole). 1.0 = all of it.
    subset: float = 1.0
    # After the search, the best configuration is trained once more at full budget (all of train, all `epochs`) and
    # competes with the trial on validation (bench.search.finish). auto: unless the best trial already ran at full budget.
    refit: str = "auto"
    # After the champion is chosen on validation, its configuration (every member's, for an ensemble) trains again on
    # train + validation and that model is registered, with the chosen fit's validation score as its estimate
    # (bench.search.refit_full; AutoGluon's refit_full). Off by default: it costs one more fit per member.
    refit_full: bool = False
    # After the trials, the best trial's configuration trains K more times, on K grouped folds of train + validation,
    # and the bag of those fits is registered with its out-of-fold score (bench.search.bag; AutoGluon's num_bag_folds).
    # 0: off (it costs K more fits after the deadline).
    bag_folds: int = 0
    workers: int = 1  # processes on this machine; 0 = coordinate only (other machines join and run the trials)
    max_consecutive_failures: int = 5
    retries: int = 1  # how often a trial whose process died is run again
    verbose: int = 0

    def __post_init__(self) -> None:
        check(_rules(), self)
        if self.refit_full and self.bag_folds:
            raise ConfigError("refit_full and bag_folds both train the champion again on train + validation; "
                              f"set one of them (got refit_full=true, bag_folds={self.bag_folds})")
        if self.image_size == 0:  # after the checks: a bad parameter answers before the data stack loads
            from bench.data.loading import default_image_size
            object.__setattr__(self, "image_size", default_image_size(self.data))

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


REFIT = ("auto", "never")
_SIZE = between(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)


def _rules() -> Rules:
    engine_options = [(name, one_of(values)) for spec in ENGINES.specs() for name, values in spec.options.items()]
    return (
        ("trials", at_least(1)),
        ("timeout", satisfies(lambda v: isinstance(v, (int, float)) and v >= 0, "a number of seconds >= 0 (0 means no limit)")),
        ("epoch_budget", at_least(0)),
        ("epochs", at_least(1)),
        ("image_size", satisfies(lambda v: v == 0 or _SIZE.test(v), f"0 (the dataset's) or {_SIZE.rule}")),
        ("engine", one_of(ENGINES.names())),
        *engine_options,
        ("objective", one_of(OBJECTIVES)),
        ("tta", one_of(tuple(TRANSFORMS))),
        ("subset", satisfies(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v <= 1.0,
                             "a float in the range (0.0, 1.0]")),
        ("refit", one_of(REFIT)),
        ("bag_folds", satisfies(lambda v: isinstance(v, int) and not isinstance(v, bool) and (v == 0 or v >= 2),
                                "0 (off) or an int >= 2")),
        ("workers", at_least(0)),
        ("max_consecutive_failures", at_least(1)),
        ("retries", at_least(0)),
        ("experiment", non_empty()),
        ("registered_model", non_empty()),
    )


def make_config(**values: Any) -> SearchConfig:
    """A SearchConfig from command-line text or typed values; None means the default."""
    return make(SearchConfig, values)
