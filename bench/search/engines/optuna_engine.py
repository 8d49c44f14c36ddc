"""The Optuna engine: a seeded sampler, a pruner fed each epoch's validation value, resumable storage.

Several processes (or machines) may run this on one study at once; each stops when finished plus running
trials reach the target. A trial whose process died is failed with the reason and re-queued (`retries`), and
its MLflow run is ended FAILED, by whichever process notices first: at start-up, after each trial, and by the
coordinator before it summarises.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bench import tracking
from bench.search import workers
from bench.search.budget import EPOCHS_METRIC, Budget
from bench.search.context import SearchContext
from bench.tracking import dblock
from bench.search.config import SearchConfig
from bench.errors import BenchError
from bench.search.engines.strategies import PRUNERS, SAMPLERS
from bench.search.space import suggest_optuna
from bench.metrics import direction
from bench.text import one_line
from bench.tracking import tags as tag

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR, REASON_ATTR = "worker", "fail_reason"  # trial user attrs: who runs it, why it failed
RETRIES = 1  # default for make_storage; a search passes config.retries
# RDB storages: each trial's process writes a heartbeat; a trial silent for GRACE_S is failed (and retried) by
# the next trial start anywhere. Journal files have no heartbeat in Optuna 5.0; there `reap_dead_trials` checks
# the recorded process instead (same host only).
HEARTBEAT_S, GRACE_S = 30, 120
WAIT_POLL_S = 2.0


class RetryDeadTrial:
    """Re-queue a trial whose process died, with the same parameters, at most `max_retry` times in a row.

    Optuna's `RetryHeartbeatStaleTrialCallback` does the same, but copies every user attribute; the dead
    process's identity would make a retried trial look dead again before its new worker records itself.
    The `failed_trial`/`retry_history` system attributes are Optuna's, so its helpers read them.
    """

    def __init__(self, max_retry: int) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            return
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k not in (WORKER_ATTR, REASON_ATTR, "mlflow_run_id")},
            system_attrs={**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                          "retry_history": history},
        ))


class _NoTraceback(logging.Filter):
    """Optuna logs a traceback with every failed trial; the progress line shows the reason and the trial's
    MLflow run keeps the traceback (tag `hemabench.traceback`), so one warning line is enough here."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("optuna.study._optimize").addFilter(_NoTraceback())


def make_storage(url: str, *, retries: int = RETRIES) -> optuna.storages.BaseStorage:
    """A journal file (a path, or `journal:<path>`) by default; an RDB URL (sqlite, postgresql, mysql) otherwise,
    with heartbeats. A fresh sqlite file is created under a file lock (two processes creating it at once crash)."""
    if "://" in url:
        with dblock.creating(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(dblock.with_driver(url), heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                              heartbeat_stale_trial_callback=RetryDeadTrial(retries) if retries else None)
    return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))


def create_study(config: SearchConfig) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=config.study_name,
        storage=make_storage(config.storage_url, retries=_retries(config)),
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


def reap_dead_trials(study: optuna.Study, *, retries: int = RETRIES) -> list[optuna.trial.FrozenTrial]:
    """Fail the RUNNING trials whose process is gone (this host only) with the reason, and re-queue them.

    Two processes may reap at once: the storage refuses the second update of a finished trial, so each dead
    trial is failed and re-queued once.
    """
    storage, retry = study._storage, RetryDeadTrial(retries) if retries else None
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = trial.user_attrs.get(WORKER_ATTR)
        if not workers.is_dead(who):
            continue
        reason = f"worker process {who['pid']} on {who['host']} died during the trial (killed or crashed)"
        try:
            storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        reaped.append(storage.get_trial(trial._trial_id))
        print(f"trial {trial.number} FAIL: {reason}" + ("; retrying it" if retry else ""), flush=True)
        if retry is not None:
            retry(study, reaped[-1])
    return reaped


def end_orphan_runs(ctx: SearchContext, study: optuna.Study) -> int:
    """End FAILED (with the reason) the study's MLflow child runs left RUNNING by a process that died:
    those whose Optuna trial is no longer running. Returns how many were ended."""
    running = tracking.running_children(ctx.client, ctx.experiment_id, ctx.config.study_name)
    if not running:
        return 0
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    ended = 0
    for run in running:
        trial = trials.get(int(run.data.tags.get(tag.TRIAL, -1)))
        if trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        reason = trial.user_attrs.get(REASON_ATTR) or (f"no heartbeat from its worker for over {GRACE_S} s "
                                                        f"(process or machine died)")
        tracking.log_batch(ctx.client, run.info.run_id, tags={tag.STATE: "FAIL",
                                                              tag.REASON: reason})
        ctx.client.set_terminated(run.info.run_id, "FAILED")
        ended += 1
    if ended:
        print(f"ended {ended} MLflow trial run(s) left RUNNING by a dead worker as FAILED", flush=True)
    return ended


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


def _wait_for_others(study: optuna.Study, retries: int) -> None:
    """The coordinator summarises once no trial is running anywhere (other processes or machines)."""
    told = False
    while True:
        reap_dead_trials(study, retries=retries)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # RDB heartbeat; a no-op for journal files
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        if not told:
            print(f"waiting for {len(running)} trial(s) still running in other workers: "
                  f"{', '.join(str(t.number) for t in running)}", flush=True)
            told = True
        time.sleep(WAIT_POLL_S)


def run(ctx: SearchContext) -> None:
    config, space = ctx.config, ctx.space
    retries = _retries(config)
    study = create_study(config)
    coordinator = workers.parent_run_id() is None
    reap_dead_trials(study, retries=retries)
    end_orphan_runs(ctx, study)

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
    budget = _StopOnBudget(Budget.of(config, len(ctx.dataset.y_train), trials=_claimed(study), epochs=_epochs(study)))
    if config.workers > 1:  # only a coordinator gets here with workers > 1: its worker processes ran the trials
        print(f"study {config.study_name}: {done} of {config.trials} trials finished by {config.workers} workers",
              flush=True)
    elif not budget.budget.exhausted():
        if done and coordinator:
            print(f"resuming study {config.study_name}: {done} of {config.trials} trials already finished", flush=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            study.optimize(objective, callbacks=[target, budget, stopper], catch=(Exception,), gc_after_trial=True)
    else:
        print(f"study {config.study_name}: {done} trials finished, {budget.budget.describe()}", flush=True)
    if fatal:
        raise fatal[0]
    if stopper.streak >= stopper.limit:
        raise BenchError(f"stopping: {stopper.streak} trials failed in a row (max_consecutive_failures="
                         f"{stopper.limit}); last: {stopper.reason}")
    if coordinator:
        _wait_for_others(study, retries)
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
