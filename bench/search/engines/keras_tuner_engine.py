"""The KerasTuner engine: the same YAML space through a KerasTuner HyperModel and oracle (random, bayesian,
hyperband). Each trial runs through the shared `TrialRunner` inside the tuner's `run_trial`, so MLflow gets
the same child runs, metrics, artifacts and registered model as with the Optuna engine.

Conditional parameters are declared only while active (`bench.space.suggest_keras_tuner`): a trial's
`build(hp)` declares what its values activate, and the oracle adds newly seen parameters to its space at
the end of the trial (KerasTuner's `allow_new_entries`); the Bayesian oracle fills an inactive parameter
with its default when it vectorises a trial. The tuner's state lives in `<tracking-DB folder>/keras_tuner/
<study>` with `overwrite=False`, so a rerun resumes and stops once the study has `trials` trials.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import keras_tuner as kt

from bench import paths
from bench.search.config import SearchConfig
from bench.errors import BenchError
from bench.metrics import Direction, direction
from bench.search.space import Space, suggest_keras_tuner
from bench.search.context import SearchContext
from bench.text import one_line

TunerClass = type[kt.Tuner]
TUNERS: dict[str, tuple[TunerClass, Callable[[SearchConfig], dict[str, Any]]]] = {
    "random": (kt.RandomSearch, lambda c: {"max_trials": c.trials}),
    "bayesian": (kt.BayesianOptimization,
                 lambda c: {"max_trials": c.trials, "num_initial_points": min(c.trials, max(2, c.trials // 3))}),
    # Hyperband spends `tuner/epochs` (up to `epochs`) per trial; `trials` still caps the count (see run()).
    "hyperband": (kt.Hyperband, lambda c: {"max_epochs": c.epochs, "factor": 3}),
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


def run(ctx: SearchContext) -> None:
    config = ctx.config
    state: dict[str, Any] = {"best": None, "reason": ""}

    def is_best(value: float) -> bool:
        return state["best"] is None or ctx.better(value, state["best"])

    runner = ctx.runner(is_best)

    def trial_fn(trial: kt.engine.trial.Trial) -> dict[str, float]:
        hp = trial.hyperparameters
        params = tuner.hypermodel.build(hp)
        epochs = int(hp.values.get("tuner/epochs", config.epochs))
        trial_runner = runner if epochs == config.epochs else dataclasses.replace(
            runner, config=dataclasses.replace(config, epochs=epochs))
        try:
            outcome = trial_runner.run(int(trial.trial_id), params)
        except BenchError as exc:
            raise _Abort(exc) from exc
        except Exception as exc:
            state["reason"] = one_line(exc)
            raise
        finally:
            runner.last_run_id = trial_runner.last_run_id
            if runner.deadline is not None and time.monotonic() >= runner.deadline:
                tuner.oracle.max_trials = len(tuner.oracle.trials)  # the search deadline: start no further trial
        if outcome.value is not None and is_best(outcome.value):
            state["best"] = outcome.value
        return {config.objective: outcome.value}

    tuner = make_tuner(ctx, trial_fn)
    previous = _best(tuner.oracle)
    if previous is not None:
        state["best"] = previous[0]
    ctx.progress.set_best(previous)
    done = len(tuner.oracle.trials)
    if done >= config.trials:
        print(f"study {config.study_name} already has {done} KerasTuner trials (>= {config.trials}); nothing to run",
              flush=True)
        return
    if done:
        print(f"resuming KerasTuner study {config.study_name}: {done} of {config.trials} trials already ran", flush=True)
    try:
        tuner.search(verbose=config.verbose)
    except _Abort as exc:
        raise exc.error from None
    except RuntimeError as exc:
        if "consecutive failures" not in str(exc):
            raise
        raise BenchError(f"stopping: {config.max_consecutive_failures} trials failed in a row "
                         f"(max_consecutive_failures={config.max_consecutive_failures}); last: {state['reason']}") from None
