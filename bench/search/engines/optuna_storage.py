"""Optuna storage and the trials of dead processes: the storage a study lives in (a journal file or an RDB with
heartbeats), and how a trial whose process died is failed with the reason, re-queued (`retries`), and its MLflow run
ended KILLED with the reason, by whichever process notices first.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bench import tracking
from bench.search import workers
from bench.search.context import SearchContext
from bench.tracking import dblock
from bench.tracking import tags as tag

WORKER_ATTR, REASON_ATTR = "worker", "fail_reason"  # trial user attrs: who runs it, why it failed
RETRIES = 1  # default for make_storage; a search passes config.retries
# RDB storages: each trial's process writes a heartbeat (workers.heartbeat(): every 30 s, BENCH_HEARTBEAT_S); a
# trial silent for 4x that is failed (and retried) by the next trial start or wait anywhere. Journal files have no
# heartbeat in Optuna 5.0; there `reap_dead_trials` checks the recorded process instead (same host only).


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
    """End KILLED (with the reason) the study's MLflow child runs left RUNNING by a process that died:
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
        ctx.client.set_terminated(run.info.run_id, "KILLED")
        ended += 1
    if ended:
        print(f"ended {ended} MLflow trial run(s) left RUNNING by a dead worker as KILLED", flush=True)
    return ended
