"""Optuna's search strategies as registries: samplers (which configuration next) and pruners (when to stop a trial).

Each entry builds the Optuna object from the search configuration; `optuna` itself is imported by the builder,
so that listing the names (to validate `--sampler`) costs nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.registry import Registry

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler

    from bench.search.config import SearchConfig


@dataclass(frozen=True)
class StrategySpec:
    name: str
    build: Callable[[SearchConfig], BaseSampler | BasePruner]


SAMPLERS: Registry[StrategySpec] = Registry("sampler", StrategySpec)
PRUNERS: Registry[StrategySpec] = Registry("pruner", StrategySpec)


@SAMPLERS.decorator("tpe")
def tpe(c: SearchConfig) -> BaseSampler:
    import optuna

    from bench.search.budget import startup_trials

    return optuna.samplers.TPESampler(seed=c.seed, n_startup_trials=startup_trials(c))


@SAMPLERS.decorator("random")
def random(c: SearchConfig) -> BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=c.seed)


@SAMPLERS.decorator("cmaes")
def cmaes(c: SearchConfig) -> BaseSampler:
    import optuna

    return optuna.samplers.CmaEsSampler(seed=c.seed, warn_independent_sampling=False)


@SAMPLERS.decorator("qmc")
def qmc(c: SearchConfig) -> BaseSampler:
    import optuna

    return optuna.samplers.QMCSampler(seed=c.seed, warn_independent_sampling=False)


@PRUNERS.decorator("median")
def median(c: SearchConfig) -> BasePruner:
    import optuna

    # Two finished trials are enough of a yardstick: on 10-trial studies a third unpruned dud costs a minute.
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, c.epochs // 4))


@PRUNERS.decorator("patient")
def patient(c: SearchConfig) -> BasePruner:
    import optuna

    # The median pruner, asked only once a trial has stopped improving: a curve that starts low but still climbs
    # (fine-tuning a backbone, heavy augmentation) is not judged on its first epochs. Optuna marks it experimental.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(median(c), patience=1)


@PRUNERS.decorator("hyperband")
def hyperband(c: SearchConfig) -> BasePruner:
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=c.epochs)


@PRUNERS.decorator("successive_halving")
def successive_halving(c: SearchConfig) -> BasePruner:
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)


@PRUNERS.decorator("none")
def none(c: SearchConfig) -> BasePruner:
    import optuna

    return optuna.pruners.NopPruner()
