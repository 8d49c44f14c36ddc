"""The KerasTuner engine: the same YAML space through a KerasTuner HyperModel and oracle (random, bayesian,
hyperband). Each trial runs through the shared `TrialRunner` inside the tuner's `run_trial`, so MLflow gets
the same child runs, metrics, artifacts and registered model as with the Optuna engine.

Conditional parameters are declared only while active (`bench.space.suggest_keras_tuner`): a trial's
`build(hp)` declares what its values activate, and the oracle adds newly seen parameters to its space at
the end of the trial (KerasTuner's `allow_new_entries`); the Bayesian oracle fills an inactive parameter
with its default when it vectorises a trial. The tuner's state lives in `<tracking-DB folder>/keras_tuner/
<study>` with `overwrite=False`, so a rerun resumes and stops once the study's budget is spent.

Budgets (`bench.search.budget`): after each trial the engine adds what it spent, and once a limit is reached
it caps the oracle's `max_trials` at the trials it has, which stops `search`. Hyperband runs as many
iterations as the budget pays for (under a trials budget, `trials` caps it). A promoted Hyperband trial
continues as KerasTuner intends: it starts from the weights of the trial it was promoted from
(`tuner/trial_id`; KerasTuner's own tuner reloads that trial's checkpoint the same way) and trains
`tuner/epochs - tuner/initial_epoch` more epochs, so it reaches `tuner/epochs` in total. The weights are
kept in the trial's folder of the tuner's directory; without them (a trial from before this rule) it trains
afresh for all `tuner/epochs`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import keras_tuner as kt
from keras_tuner.src import config as kt_config
import numpy as np

from bench import paths
from bench.search.budget import EPOCHS_METRIC, Budget, startup_trials
from bench.search.config import SearchConfig
from bench.errors import BenchError
from bench.metrics import Direction, direction
from bench.search.space import Space, suggest_keras_tuner
from bench.search.context import SearchContext
from bench.search.trial import TrialOutcome
from bench.text import one_line

TunerClass = type[kt.Tuner]
TUNERS: dict[str, tuple[TunerClass, Callable[[SearchConfig], dict[str, Any]]]] = {
    "random": (kt.RandomSearch, lambda c: {"max_trials": c.trials}),
    "bayesian": (kt.BayesianOptimization,
                 lambda c: {"max_trials": c.trials, "num_initial_points": startup_trials(c, low=2)}),
    # Hyperband trains a trial to `tuner/epochs` (up to `epochs`); iterations repeat until the budget is spent.
    "hyperband": (kt.Hyperband, lambda c: {"max_epochs": c.epochs, "factor": 3, "hyperband_iterations": None}),
}


class SpaceHyperModel(kt.HyperModel):
    """`build(hp)` declares the space's active parameters and returns their values (no model: the trial
    runner builds and trains it)."""

    def __init__(self, space: Space) -> None:
        super().__init__(name=space.name)
        self.space = space

    def build(self, hp: kt.HyperParameters) -> dict[str, Any]:
        return as_declared(self.space, suggest_keras_tuner(self.space, hp))


def as_declared(space: Space, values: dict[str, Any]) -> dict[str, Any]:
    """KerasTuner's Choice turns [false, true] into 0/1; give back the YAML's own choice (True, not 1) so
    both engines log the same parameter values."""
    choices = {p.name: p.choices for p in space.params if p.type == "categorical"}
    out = {}
    for name, value in values.items():
        same = [c for c in choices.get(name, ()) if c == value]
        out[name] = next((c for c in same if type(c) is type(value)), same[0] if same else value)
    return out


class _Abort(kt.errors.FatalError):
    """A user-fixable `BenchError` (bad weights, bad space…) stops the search at once, not after retries."""

    def __init__(self, error: BenchError) -> None:
        super().__init__(str(error))
        self.error = error


def project_dir() -> Path:
    """`keras_tuner/` beside the tracking database (the working directory for a non-sqlite store)."""
    uri = paths.tracking_uri()
    return (Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path.cwd()) / "keras_tuner"


def make_tuner(ctx: SearchContext, trial_fn: Callable[[kt.engine.trial.Trial], dict[str, float]]) -> kt.Tuner:
    config = ctx.config
    # KerasTuner prints the whole traceback of every failed trial while its DEBUG flag is on (the default; it has
    # no public switch). Our trial line already says why, in one line, and the MLflow run keeps the traceback.
    kt_config.DEBUG = False
    base, options = TUNERS[config.tuner]
    tuner_class = type(f"Bench{base.__name__}", (base,), {"run_trial": lambda self, trial, *a, **k: trial_fn(trial)})
    tuner = tuner_class(
        hypermodel=SpaceHyperModel(ctx.space),
        objective=kt.Objective(config.objective, direction="max" if direction(config.objective) is Direction.MAXIMIZE else "min"),
        seed=config.seed,
        directory=str(project_dir()),
        project_name=config.study_name,
        overwrite=False,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=config.max_consecutive_failures,
        **options(config),
    )
    tuner.oracle.max_trials = config.trials  # Hyperband has no max_trials argument; the oracle honours it
    return tuner


def _best(oracle: kt.Oracle) -> tuple[float, int] | None:
    best = oracle.get_best_trials(1)
    return (float(best[0].score), int(best[0].trial_id)) if best and best[0].score is not None else None


WEIGHTS_FILE = "bench_weights.npz"


def _save_weights(tuner: kt.Tuner, trial_id: str, weights: list[np.ndarray] | None) -> None:
    if weights is not None:
        folder = Path(tuner.get_trial_dir(trial_id))
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / WEIGHTS_FILE, *weights)


def _load_weights(tuner: kt.Tuner, trial_id: str | None) -> list[np.ndarray] | None:
    path = Path(tuner.get_trial_dir(trial_id)) / WEIGHTS_FILE if trial_id else None
    if path is None or not path.is_file():
        return None
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _spent_epochs(oracle: kt.Oracle) -> int:
    """Epochs trained by the study's earlier trials (recorded with each trial's metrics)."""
    return sum(int(t.metrics.get_last_value(EPOCHS_METRIC) or 0) for t in oracle.trials.values()
               if t.metrics.exists(EPOCHS_METRIC))


def run(ctx: SearchContext) -> None:
    config = ctx.config
    state: dict[str, Any] = {"best": None, "reason": ""}
    budget = Budget.of(config, ctx.trial_images)

    def is_best(value: float) -> bool:
        return state["best"] is None or ctx.better(value, state["best"])

    runner = ctx.runner(is_best)

    def trial_fn(trial: kt.engine.trial.Trial) -> dict[str, float]:
        hp = trial.hyperparameters
        params = tuner.hypermodel.build(hp)
        start = _load_weights(tuner, hp.values.get("tuner/trial_id"))
        epochs = int(hp.values.get("tuner/epochs", config.epochs))
        epochs -= int(hp.values.get("tuner/initial_epoch", 0)) if start is not None else 0
        trained: list[int] = []

        def done(outcome: TrialOutcome) -> None:
            trained.append(len(outcome.history))
            if runner.on_done is not None:
                runner.on_done(outcome)

        trial_runner = dataclasses.replace(runner, config=dataclasses.replace(config, epochs=epochs), on_done=done)
        try:
            outcome = trial_runner.run(int(trial.trial_id), params, initial_weights=start)
        except BenchError as exc:
            raise _Abort(exc) from exc
        except Exception as exc:
            state["reason"] = one_line(exc)
            raise
        finally:
            runner.last_run_id = trial_runner.last_run_id
            budget.spend(sum(trained))
            deadline_passed = runner.deadline is not None and time.monotonic() >= runner.deadline
            if budget.exhausted() or deadline_passed:
                tuner.oracle.max_trials = len(tuner.oracle.trials)  # the oracle's own stop: `search` ends
        _save_weights(tuner, trial.trial_id, outcome.weights)
        if outcome.value is not None and is_best(outcome.value):
            state["best"] = outcome.value
        return {config.objective: outcome.value, EPOCHS_METRIC: float(sum(trained))}

    tuner = make_tuner(ctx, trial_fn)
    previous = _best(tuner.oracle)
    if previous is not None:
        state["best"] = previous[0]
    ctx.progress.set_best(previous)
    done = len(tuner.oracle.trials)
    budget.trials, budget.epochs = done, _spent_epochs(tuner.oracle)
    if budget.exhausted():
        print(f"study {config.study_name} already has {done} KerasTuner trials ({budget.describe()}); nothing to run",
              flush=True)
        return
    if done:
        print(f"resuming KerasTuner study {config.study_name}: {budget.describe()} already", flush=True)
    try:
        tuner.search(verbose=config.verbose)
    except _Abort as exc:
        raise exc.error from None
    except RuntimeError as exc:
        if "consecutive failures" not in str(exc):
            raise
        raise BenchError(f"stopping: {config.max_consecutive_failures} trials failed in a row "
                         f"(max_consecutive_failures={config.max_consecutive_failures}); last: {state['reason']}") from None
