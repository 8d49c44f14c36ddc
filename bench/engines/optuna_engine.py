"""The Optuna engine: a seeded sampler, a pruner fed each epoch's validation value, resumable storage."""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bench.config import SearchConfig
from bench.errors import BenchError
from bench.space import suggest_optuna
from bench.metrics import direction

SAMPLERS: dict[str, Callable[[SearchConfig], optuna.samplers.BaseSampler]] = {
    "tpe": lambda c: optuna.samplers.TPESampler(seed=c.seed, n_startup_trials=min(10, max(3, c.trials // 3))),
    "random": lambda c: optuna.samplers.RandomSampler(seed=c.seed),
    "cmaes": lambda c: optuna.samplers.CmaEsSampler(seed=c.seed, warn_independent_sampling=False),
    "qmc": lambda c: optuna.samplers.QMCSampler(seed=c.seed, warn_independent_sampling=False),
}
PRUNERS: dict[str, Callable[[SearchConfig], optuna.pruners.BasePruner]] = {
    "median": lambda c: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, c.epochs // 3)),
    "hyperband": lambda c: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=c.epochs),
    "successive_halving": lambda c: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
    "none": lambda c: optuna.pruners.NopPruner(),
}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file (a path, or `journal:<path>`) by default; an RDB URL (sqlite, postgresql, mysql) otherwise."""
    if "://" in url:
        return RDBStorage(url)
    return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))


def create_study(config: SearchConfig) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=config.study_name,
        storage=make_storage(config.storage_url),
        sampler=SAMPLERS[config.sampler](config),
        pruner=PRUNERS[config.pruner](config),
        direction=direction(config.objective),
        load_if_exists=True,
    )


class _StopAfterFailures:
    """Stops the study after `limit` failed trials in a row, remembering the last reason."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.reason = limit, 0, ""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            self.streak += 1
            self.reason = trial.user_attrs.get("fail_reason", "")
            if self.streak >= self.limit:
                study.stop()
        else:
            self.streak = 0


def run(ctx: Any) -> None:
    config, space = ctx.config, ctx.space
    study = create_study(config)

    def is_best(value: float) -> bool:
        try:
            return ctx.better(value, study.best_value)
        except ValueError:  # no completed trial yet
            return True

    runner = ctx.runner(is_best)
    ctx.progress.set_best(_best(study))

    def objective(trial: optuna.Trial) -> float:
        params = suggest_optuna(space, trial)

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            trial.report(row[config.objective], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            outcome = runner.run(trial.number, params, on_epoch=on_epoch, prune_exceptions=(optuna.TrialPruned,))
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            trial.set_user_attr("mlflow_run_id", runner.last_run_id)
        return outcome.value

    done = sum(t.state in FINISHED for t in study.trials)
    stopper = _StopAfterFailures(config.max_consecutive_failures)
    if done < config.trials:
        if done:
            print(f"resuming study {config.study_name}: {done} of {config.trials} trials already finished", flush=True)
        study.optimize(
            objective,
            timeout=config.timeout or None,
            callbacks=[optuna.study.MaxTrialsCallback(config.trials, states=FINISHED), stopper],
            catch=(Exception,),
            gc_after_trial=True,
        )
    else:
        print(f"study {config.study_name} already has {done} finished trials (>= {config.trials}); nothing to run",
              flush=True)
    if stopper.streak >= stopper.limit:
        raise BenchError(f"stopping: {stopper.streak} trials failed in a row (max_consecutive_failures="
                         f"{stopper.limit}); last: {stopper.reason}")
    ctx.figures.update(figures(study))


def _best(study: optuna.Study) -> tuple[float, int] | None:
    try:
        return study.best_value, study.best_trial.number
    except ValueError:
        return None


def figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's own plotly figures; each needs enough finished trials, so a failing one is skipped."""
    from optuna import visualization as vis

    makers = {
        "optuna_optimization_history.html": vis.plot_optimization_history,
        "optuna_param_importances.html": vis.plot_param_importances,
        "optuna_parallel_coordinate.html": vis.plot_parallel_coordinate,
        "optuna_intermediate_values.html": vis.plot_intermediate_values,
    }
    out = {}
    for name, make in makers.items():
        try:
            out[name] = make(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
    return out
