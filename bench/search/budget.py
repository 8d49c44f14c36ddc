"""A study's budget: how much it may spend and what it has spent, in the three units every engine honours.

- `trials`: trials started (`SearchConfig.trials`);
- `epochs`: training epochs summed over every trial, pruned and failed ones included (`SearchConfig.epoch_budget`);
- `seconds`: wall-clock seconds of this invocation (`SearchConfig.timeout`).

A limit of 0 is no limit; the study stops when any limit is reached. Engines call `spend` after each trial
and stop when `exhausted()` names a unit. A trial in progress is never cut short, so a study ends at most one
trial past its limit per process working on it: within `epochs - 1` epochs of an epochs budget with one process,
within `workers × (epochs - 1)` with several (each counts the finished trials of all, not the ones still running). What was spent (with images seen and
process CPU-seconds beside) is what the benchmark table reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.text import count

if TYPE_CHECKING:
    from bench.search.config import SearchConfig

UNITS = ("trials", "epochs", "seconds")
EPOCHS_METRIC = "epochs_trained"  # per trial: epochs it actually trained (a pruned trial fewer than `epochs`)
UNLIMITED_TRIALS = 1_000_000  # the trials limit of a study budgeted in epochs or seconds alone
STARTUP_SHARE = 3  # TPE's random start-up trials: a third of what the budget affords (see `startup_trials`)


def limits(config: SearchConfig) -> dict[str, float]:
    return {"trials": config.trials, "epochs": config.epoch_budget, "seconds": config.timeout}


def budget_words(config: SearchConfig) -> str:
    """The budget as the study line says it: `10 trials of 10 epochs`, `trials of 3 epochs, 40 epochs in all`,
    `trials of 10 epochs, deadline 1800 s`."""
    trials = f"{config.trials} trials" if config.trials < UNLIMITED_TRIALS else "trials"
    limits = [f"{config.epoch_budget} epochs in all" if config.epoch_budget else "",
              f"deadline {config.timeout:g} s" if config.timeout else ""]
    return ", ".join([f"{trials} of {count(config.epochs, 'epoch')}", *filter(None, limits)])


def affordable_trials(config: SearchConfig) -> int:
    """How many full-length trials the budget pays for (pruned trials make room for more)."""
    trials = config.trials
    if config.epoch_budget:
        trials = min(trials, max(1, config.epoch_budget // config.epochs))
    return trials


def startup_trials(config: SearchConfig, *, low: int = 3, high: int = 10) -> int:
    """Random start-up trials of a model-based sampler, scaled to the budget: with too many, TPE is random
    search by construction; with too few, its first model fits noise."""
    return min(high, max(low, affordable_trials(config) // STARTUP_SHARE))


@dataclass
class Budget:
    """Limits per unit, and the study's spending: `trials` and `epochs` include what earlier processes spent
    (the engine passes them in on resume); seconds count from this object's creation."""

    limit: dict[str, float]
    n_train: int  # training images per epoch, for `images`
    trials: int = 0
    epochs: int = 0
    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)

    @classmethod
    def of(cls, config: SearchConfig, n_train: int, *, trials: int = 0, epochs: int = 0) -> Budget:
        return cls(limits(config), n_train, trials=trials, epochs=epochs)

    def spend(self, epochs: int) -> None:
        """One trial ended (complete, pruned or failed) after training `epochs` epochs."""
        self.trials += 1
        self.epochs += int(epochs)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def used(self, unit: str) -> float:
        return {"trials": self.trials, "epochs": self.epochs, "seconds": self.seconds}[unit]

    def exhausted(self) -> str | None:
        """The first unit whose limit is reached, or None."""
        return next((unit for unit in UNITS if self.limit.get(unit) and self.used(unit) >= self.limit[unit]), None)

    def spent(self) -> dict[str, float]:
        return {"trials": self.trials, "epochs": self.epochs, "images": self.epochs * self.n_train,
                "cpu_seconds": time.process_time() - self.cpu_started, "wall_seconds": self.seconds}

    def describe(self) -> str:
        unit = self.exhausted()
        return (f"budget spent ({unit}): {self.trials} trials, {self.epochs} epochs, {self.seconds:.0f} s"
                if unit else f"{self.trials} trials, {self.epochs} epochs, {self.seconds:.0f} s")
