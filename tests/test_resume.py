"""Resume after SIGKILL: the same command finishes the requested trials; the killed trial is FAIL in Optuna,
retried with its parameters, and its MLflow run ends KILLED with the reason, not RUNNING."""

from __future__ import annotations

import signal
import subprocess
import time
import warnings
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.search import workers
from bench.tracking import client as tracking_client
from bench.search.engines.optuna_storage import RetryDeadTrial, make_storage, reap_dead_trials
from tests import searchproc


def dead_identity() -> dict:
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    return {**workers.identity(), "pid": child.pid, "start": "0"}


def study_with_running_trial(tmp_path: Path, who: dict) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=make_storage(str(tmp_path / "j.journal")))
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.set_user_attr("worker", who)
    return study


def test_a_trial_whose_process_died_is_failed_with_the_reason_and_requeued_once(tmp_path: Path) -> None:
    study = study_with_running_trial(tmp_path, dead_identity())
    first, again = reap_dead_trials(study, retries=1), reap_dead_trials(study, retries=1)
    assert [t.number for t in first] == [0] and again == []
    dead, retry = study.trials
    assert dead.state == TrialState.FAIL and "died during the trial" in dead.user_attrs["fail_reason"]
    assert retry.state == TrialState.WAITING and retry.params == dead.params
    assert "worker" not in retry.user_attrs and "fail_reason" not in retry.user_attrs
    with warnings.catch_warnings():  # Optuna's own reader of the retry attributes is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0


def test_a_live_trial_is_left_alone_and_retries_stop_at_the_limit(tmp_path: Path) -> None:
    study = study_with_running_trial(tmp_path, workers.identity())
    assert reap_dead_trials(study) == [] and study.trials[0].state == TrialState.RUNNING
    (tmp_path / "x").mkdir()
    exhausted = study_with_running_trial(tmp_path / "x", dead_identity())
    RetryDeadTrial(0)(exhausted, exhausted.trials[0])
    assert len(exhausted.trials) == 1


def test_an_rdb_trial_without_heartbeat_is_failed_and_requeued_by_the_storage(tmp_path: Path) -> None:
    # The same callback as make_storage's, with a 1 s grace period instead of GRACE_S.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=1,
                                             heartbeat_stale_trial_callback=RetryDeadTrial(1))
        study = optuna.create_study(storage=storage)
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        storage.record_heartbeat(trial._trial_id)  # then the process "dies": no more heartbeats
        time.sleep(2.5)
        optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].params == study.trials[0].params


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_to_the_requested_count_without_running_runs(tracking: Path) -> None:
    space, storage = searchproc.write_space(tracking), str(tracking / "optuna.journal")
    argv = searchproc.argv(space, storage, trials=3, study="resume")
    c = tracking_client()  # creates the store first: this process polls it while the search starts
    log = tracking / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(argv, cwd=tracking, env=searchproc.env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            killed_run = wait_for_running_trial(c, first, log, number=1)
            first.send_signal(signal.SIGKILL)
        finally:
            first.kill()
            first.wait()
    assert c.get_run(killed_run).info.status == "RUNNING"  # it died mid-trial

    second = subprocess.run(argv, cwd=tracking, env=searchproc.env(), capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "resuming study resume: 1 of 3 trials already finished" in second.stdout
    assert "trial 1 FAIL: worker process" in second.stdout

    study = optuna.load_study(study_name="resume", storage=make_storage(storage))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 3 and states[1] == TrialState.FAIL and TrialState.RUNNING not in states
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == 1]
    assert retry.state == TrialState.COMPLETE and retry.params == study.trials[1].params

    runs = searchproc.trial_runs(c, "resume")
    assert [int(r.data.tags["hemabench.trial"]) for r in runs] == [t.number for t in study.trials]
    killed = c.get_run(killed_run)
    assert killed.info.status == "KILLED" and killed.data.tags["hemabench.state"] == "FAIL"
    assert "died during the trial" in killed.data.tags["hemabench.reason"]
    assert [r.info.status for r in runs].count("FINISHED") == 3 and "RUNNING" not in {r.info.status for r in runs}
    (parent,) = searchproc.parents(c, "resume")
    assert parent.info.status == "FINISHED"
    assert len(c.search_model_versions("name='tests-model'")) == 1


def wait_for_running_trial(c: MlflowClient, proc: subprocess.Popen, log: Path, *, number: int,
                           timeout: float = 180) -> str:
    """The run id of trial `number` once its MLflow run exists and is RUNNING (training has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the search ended (status {proc.returncode}) before trial {number} started:\n"
                                 f"{log.read_text()[-3000:]}")
        experiment = c.get_experiment_by_name("tests")
        if experiment is not None:
            runs = c.search_runs([experiment.experiment_id], f"tags.`hemabench.trial` = '{number}' and "
                                                             f"attributes.status = 'RUNNING'")
            if runs:
                return runs[0].info.run_id
        time.sleep(0.1)
    raise AssertionError(f"trial {number} did not start within {timeout} s")
