"""Faults inside trials: a diverging trial and a raising trial are FAIL with their reason and the study goes on;
after `max_consecutive_failures` failures in a row the search stops with one clear line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.search import study as search
from bench.search.engines.optuna_storage import make_storage
from tests import searchproc
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow

DIVERGES = {"type": "categorical", "choices": [float("inf"), 3.0e-3], "default": 3.0e-3}  # SGD at inf: NaN weights
RAISES = {"type": "categorical", "choices": [0, 16], "default": 16}  # a batch size of 0 makes tf.data raise


def test_diverging_and_raising_trials_fail_with_their_reason_and_the_study_goes_on(tracking: Path) -> None:
    space = searchproc.write_space(tracking, name="faults", optimizer="sgd", learning_rate=DIVERGES,
                                   batch_size=RAISES)
    # With the random sampler at seed 5 (Optuna 5.0), trials 0-2 draw: lr inf, batch size 0, a sane pair.
    config = tiny_config(tracking, space=str(space), trials=1, sampler="random", seed=5, pruner="none",
                         study="faults", warm_start=False)
    result = search.run(config)
    study = optuna.load_study(study_name="faults", storage=make_storage(config.storage_url))
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE], states
    diverged, raised = study.trials[0], study.trials[1]
    assert diverged.params["learning_rate"] == float("inf")
    assert diverged.user_attrs["fail_reason"].startswith("TrialDiverged: training loss became")
    assert raised.params["batch_size"] == 0
    assert raised.user_attrs["fail_reason"] and "TrialDiverged" not in raised.user_attrs["fail_reason"]

    runs = searchproc.trial_runs(MlflowClient(), "faults")
    assert [r.info.status for r in runs] == ["FAILED", "FAILED", "FINISHED"]
    for run, trial in zip(runs[:2], (diverged, raised)):
        assert run.data.tags["hemabench.state"] == "FAIL"
        assert run.data.tags["hemabench.reason"] == trial.user_attrs["fail_reason"]
        assert "Traceback" in run.data.tags["hemabench.traceback"]
    assert result.best is not None and result.best["trial"] == 2
    assert MlflowClient().get_run(result.parent_run_id).info.status == "FINISHED"


def test_after_max_consecutive_failures_the_search_stops_with_one_line_and_exit_2(tracking: Path) -> None:
    space = searchproc.write_space(tracking, name="broken", batch_size=0)
    out = searchproc.run(space, str(tracking / "optuna.journal"), cwd=tracking, trials=3, max_consecutive_failures=2,
                         study="broken")
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], lines[-5:]
    assert errors[0].startswith("error: stopping: 2 trials failed in a row (max_consecutive_failures=2); last: ")
    assert "Traceback" not in out.stderr

    c = MlflowClient()
    (parent,) = searchproc.parents(c, "broken")
    assert parent.info.status == "FAILED"
    runs = searchproc.trial_runs(c, "broken")
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"]
    assert all(r.data.tags["hemabench.reason"] in errors[0] for r in runs[-1:])
    study = optuna.load_study(study_name="broken", storage=make_storage(str(tracking / "optuna.journal")))
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
