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
from typing import Any, Callable

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bench import tracking
from bench.search import warm_start, workers
from bench.search.context import SearchContext
from bench.tracking import dblock
from bench.search.config import SearchConfig
from bench.errors import BenchError, ConfigError
from bench.search.engines.strategies import PRUNERS, SAMPLERS
from bench.search.space import suggest_optuna
from bench.metrics import direction
from bench.text import one_line
from bench.training import OverBudget
from bench.tracking import tags as tag

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR, REASON_ATTR = "worker", "fail_reason"  # trial user attrs: who runs it, why it failed
RETRIES = 1  # default for make_storage; a search passes config.retries
# RDB storages: each trial's process writes a heartbeat (workers.heartbeat(): every 30 s, BENCH_HEARTBEAT_S); a
# trial silent for 4x that is failed (and retried) by the next trial start or wait anywhere. Journal files have no
# heartbeat in Optuna 5.0; there `reap_dead_trials` checks the recorded process instead (same host only).
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
            interval, grace = workers.heartbeat()
            return RDBStorage(dblock.with_driver(url), heartbeat_interval=interval, grace_period=grace,
                              heartbeat_stale_trial_callback=RetryDeadTrial(retries) if retries else None)
    return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))


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
        reason = trial.user_attrs.get(REASON_ATTR) or (f"no heartbeat from its worker for over {workers.heartbeat()[1]} s "
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
    """Run trials until the study has `config.trials` finished ones. Once the target is claimed, wait for the
    trials running elsewhere before leaving: a dead worker's trial comes back (retried) and needs a live one."""
    deadline = time.monotonic() + config.timeout if config.timeout else None
    while True:
        if _claimed(study) < config.trials:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, timeout=deadline and max(1.0, deadline - time.monotonic()),
                               callbacks=callbacks, catch=(Exception,), gc_after_trial=True)
        if stopped() or (deadline is not None and time.monotonic() >= deadline):
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
    if not study.get_trials(deepcopy=False):  # a new study starts with the known-good setups (bench.search.warm_start)
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

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            trial.report(row[config.objective], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            outcome = runner.run(trial.number, params, on_epoch=on_epoch, prune_exceptions=(optuna.TrialPruned,))
        except optuna.TrialPruned:
            raise
        except OverBudget as exc:  # the space's cost ceiling: pruned (the sampler ranks it last), not failed
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
        return outcome.value

    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    stopper, target = _StopAfterFailures(config.max_consecutive_failures), _StopAtTarget(config.trials, retries)
    if config.workers != 1:  # only a coordinator gets here: worker processes or other machines run the trials
        print(f"study {config.study_name}: {done} of {config.trials} trials finished"
              + (f" by {config.workers} workers" if config.workers > 1 else ""), flush=True)
    elif _claimed(study) < config.trials:
        if done and coordinator:
            print(f"resuming study {config.study_name}: {done} of {config.trials} trials already finished", flush=True)
        _work(study, objective, config, [target, stopper], lambda: bool(fatal) or stopper.streak >= stopper.limit)
    else:
        print(f"study {config.study_name}: {done} trials finished, {config.trials} asked for", flush=True)
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
