"""The Optuna engine: a seeded sampler, a pruner fed each epoch's validation value, resumable storage
(bench.search.engines.optuna_storage), a budget in trials, epochs or seconds.

Several processes (or machines) may run this on one study at once; each stops when finished plus running
trials reach the target. Dead processes' trials are reaped at start-up, after each trial, and by the
coordinator before it summarises.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from bench.search import warm_start, workers
from bench.search.budget import EPOCHS_METRIC, Budget
from bench.search.context import SearchContext
from bench.tracking import dblock
from bench.search.config import SearchConfig
from bench.errors import BenchError, ConfigError
from bench.search.engines.optuna_storage import REASON_ATTR, WORKER_ATTR, end_orphan_runs, make_storage, reap_dead_trials
from bench.search.engines.strategies import PRUNERS, SAMPLERS
from bench.search.space import suggest_optuna
from bench.metrics import direction
from bench.text import one_line
from bench.training import OverCostCeiling

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WAIT_POLL_S = 2.0


class _NoTraceback(logging.Filter):
    """Optuna logs a traceback with every failed trial; the progress line shows the reason and the trial's
    MLflow run keeps the traceback (tag `hemabench.traceback`), so one warning line is enough here."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("optuna.study._optimize").addFilter(_NoTraceback())


def create_study(config: SearchConfig) -> optuna.Study:
    """Create or open the study; a worker only opens the one its coordinator created, in the same storage."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(config.storage_url, retries=_retries(config))
    if workers.parent_run_id():
        try:
            storage.get_study_id_from_name(config.study_name)
        except KeyError:
            raise ConfigError(f"study {config.study_name!r} is not in storage {dblock.redact(config.storage_url)}: a "
                              f"worker joins its coordinator's study, so pass the coordinator's --storage and "
                              f"arguments") from None
    return optuna.create_study(
        study_name=config.study_name,
        storage=storage,
        # Workers share the study, not the sampler's random stream: same-seeded samplers would propose the same points.
        sampler=SAMPLERS.get(config.sampler).build(dataclasses.replace(config, seed=workers.sampler_seed(config.seed))),
        pruner=PRUNERS.get(config.pruner).build(config),
        direction=direction(config.objective),
        load_if_exists=True,
    )


def prepare(config: SearchConfig) -> None:
    """Create the storage and the study before worker processes start, so that they only open them."""
    create_study(config)


def _retries(config: SearchConfig) -> int:
    return config.retries


class _StopAfterFailures:
    """Stops the study after `limit` failed trials in a row, remembering the last reason."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.reason = limit, 0, ""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            self.streak += 1
            self.reason = trial.user_attrs.get(REASON_ATTR, "")
            if self.streak >= self.limit:
                study.stop()
        else:
            self.streak = 0


def _claimed(study: optuna.Study) -> int:
    """Trials that count towards the target: finished ones, and those other workers are running now."""
    return len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))


class _StopAtTarget:
    """Stops this worker once finished plus running trials reach the target, so that N workers do not
    overshoot it (Optuna's MaxTrialsCallback counts finished trials only). Reaps dead workers' trials first,
    so that they do not count."""

    def __init__(self, target: int, retries: int) -> None:
        self.target, self.retries = target, retries

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        reap_dead_trials(study, retries=self.retries)
        if _claimed(study) >= self.target:
            study.stop()


class _StopOnBudget:
    """Stops the study once its budget (`bench.search.budget`) is spent; epochs are summed over every trial
    of the study, whichever process ran it."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.budget.trials, self.budget.epochs = _claimed(study), _epochs(study)
        if self.budget.exhausted():
            study.stop()


def _epochs(study: optuna.Study) -> int:
    return sum(int(t.user_attrs.get(EPOCHS_METRIC, 0)) for t in study.get_trials(deepcopy=False))


def _wait_for_others(study: optuna.Study, retries: int, *, target: int = 0, streak: int = 0,
                     deadline: float | None = None) -> None:
    """Wait until no trial runs anywhere (other processes or machines) and `target` trials are finished: a
    coordinator of other machines waits for them to join and finish. After `deadline` it waits only for running
    trials; once the study's last `streak` trials failed and none runs or waits, it stops with an error."""
    shown = None
    while True:
        reap_dead_trials(study, retries=retries)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # RDB heartbeat; a no-op for journal files
        trials = study.get_trials(deepcopy=False)
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        finished = sum(t.state in FINISHED for t in trials)
        if not running and (finished >= target or (deadline is not None and time.monotonic() > deadline)):
            return
        idle = not running and all(t.state != TrialState.WAITING for t in trials)
        if idle and streak and len(trials) >= streak and all(t.state == TrialState.FAIL for t in trials[-streak:]):
            raise BenchError(f"stopping: the study's last {streak} trials failed (max_consecutive_failures); last: "
                             f"{trials[-1].user_attrs.get(REASON_ATTR, '')}")
        if shown != (finished, running):
            shown = (finished, running)
            print((f"waiting: {finished} of {target} trials finished" if target else "waiting")
                  + f"; running elsewhere: {', '.join(map(str, running)) or 'none'}", flush=True)
        time.sleep(WAIT_POLL_S)


def _work(study: optuna.Study, objective: Callable[[optuna.Trial], float], config: SearchConfig,
          callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]], stopped: Callable[[], bool]) -> None:
    """Run trials until the study has `config.trials` finished ones, or `stopped()` (the budget's epochs or
    seconds, too many failures). Once the target is claimed, wait for the trials running elsewhere before leaving:
    a dead worker's trial comes back (retried) and needs a live one."""
    while True:
        if _claimed(study) < config.trials:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, callbacks=callbacks, catch=(Exception,), gc_after_trial=True)
        if stopped():
            return
        _wait_for_others(study, _retries(config))
        if _claimed(study) >= config.trials:  # nothing runs now: these are finished
            return


def run(ctx: SearchContext) -> None:
    config, space = ctx.config, ctx.space
    retries = _retries(config)
    study = create_study(config)
    coordinator = workers.parent_run_id() is None
    reap_dead_trials(study, retries=retries)
    end_orphan_runs(ctx, study)
    # A new study starts with the known-good setups (bench.search.warm_start), unless warm_start is off.
    if config.warm_start and not study.get_trials(deepcopy=False):
        for label, values in warm_start.first_trials(ctx):
            study.enqueue_trial(warm_start.searched(space, values), user_attrs={"warm_start": label},
                                skip_if_exists=True)
            print(f"warm start: {label}", flush=True)

    def is_best(value: float) -> bool:
        try:
            return ctx.better(value, study.best_value)
        except ValueError:  # no completed trial yet
            return True

    runner = ctx.runner(is_best)
    ctx.progress.set_best(_best(study))
    me = workers.identity()

    fatal: list[BenchError] = []

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, me)  # lets a later process on this host see that this one died
        params = suggest_optuna(space, trial)
        trained = [0]

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            trained[0] = epoch
            trial.report(row[config.objective], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            outcome = runner.run(trial.number, params, on_epoch=on_epoch, prune_exceptions=(optuna.TrialPruned,))
        except optuna.TrialPruned:
            raise
        except OverCostCeiling as exc:  # the space's cost ceiling: pruned (the sampler ranks it last), not failed
            trial.set_user_attr(REASON_ATTR, str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except Exception as exc:
            trial.set_user_attr(REASON_ATTR, one_line(exc))
            if isinstance(exc, BenchError):  # bad input (weights offline, a bad space): every trial would fail
                fatal.append(exc)
                trial.study.stop()
            raise
        finally:
            trial.set_user_attr("mlflow_run_id", runner.last_run_id)
            trial.set_user_attr(EPOCHS_METRIC, trained[0])
        return outcome.value

    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    stopper, target = _StopAfterFailures(config.max_consecutive_failures), _StopAtTarget(config.trials, retries)
    budget = _StopOnBudget(Budget.of(config, ctx.trial_images, trials=_claimed(study), epochs=_epochs(study)))
    if config.workers != 1:  # only a coordinator gets here: worker processes or other machines run the trials
        print(f"study {config.study_name}: {done} of {config.trials} trials finished"
              + (f" by {config.workers} workers" if config.workers > 1 else ""), flush=True)
    elif not budget.budget.exhausted():
        if done and coordinator:
            print(f"resuming study {config.study_name}: {done} of {config.trials} trials already finished", flush=True)
        # `trials` is the target `_work` waits on (a dead worker's trial comes back); epochs and seconds just stop.
        _work(study, objective, config, [target, budget, stopper],
              lambda: bool(fatal) or stopper.streak >= stopper.limit or budget.budget.exhausted() in ("epochs", "seconds"))
    else:
        print(f"study {config.study_name}: {done} trials finished, {budget.budget.describe()}", flush=True)
    if fatal:
        raise fatal[0]
    if stopper.streak >= stopper.limit:
        raise BenchError(f"stopping: {stopper.streak} trials failed in a row (max_consecutive_failures="
                         f"{stopper.limit}); last: {stopper.reason}")
    if coordinator:
        alone = config.workers == 0  # other machines run every trial: wait for them to finish the target
        _wait_for_others(study, retries, target=config.trials if alone else 0,
                         streak=config.max_consecutive_failures if alone else 0,
                         deadline=time.monotonic() + config.timeout if config.timeout else None)
        end_orphan_runs(ctx, study)
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
            with warnings.catch_warnings():  # a small study is fine: its importances are just flat
                warnings.filterwarnings("ignore", "The number of trials is too small", UserWarning)
                out[name] = make(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
    return out
