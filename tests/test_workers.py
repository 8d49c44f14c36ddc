"""`workers=2`: two processes on one study through its storage; every trial runs once, in Optuna and in MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.search import workers
from bench.search import make_config
from bench.search.engines.optuna_storage import make_storage
from bench.tracking import tags as tag
from tests import searchproc

pytestmark = pytest.mark.slow


def check_one_study_two_workers(c: MlflowClient, storage: str, study_name: str, trials: int) -> None:
    """Exactly `trials` trials, each COMPLETE once in Optuna and once as a FINISHED MLflow child of the one
    parent; the two processes both ran trials; the coordinator finished the parent and registered once."""
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * trials  # no overshoot, no failure
    assert len({t.user_attrs["worker"]["pid"] for t in study.trials}) == 2  # both processes ran trials
    (parent,) = searchproc.parents(c, study_name)
    assert parent.info.status == "FINISHED"
    runs = searchproc.trial_runs(c, study_name)
    assert [int(r.data.tags["hemabench.trial"]) for r in runs] == list(range(trials))
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert {t.number: t.user_attrs["mlflow_run_id"] for t in study.trials} == {
        int(r.data.tags["hemabench.trial"]): r.info.run_id for r in runs}
    versions = c.search_model_versions("name='tests-model'")
    assert len(versions) == 1
    # The final fit (the ensemble, on by default) ran once, in the coordinator, over the study's trials from both
    # workers, and the registered version is the fit the parent names: the ensemble when adopted, else a trial.
    (fit,) = c.search_runs([parent.info.experiment_id], f"tags.`hemabench.study` = '{study_name}' and "
                                                        f"tags.`hemabench.role` = '{tag.ENSEMBLE_ROLE}'")
    assert fit.info.run_id == parent.data.tags[tag.ENSEMBLE_RUN_ID]
    members = {int(m["trial"]) for m in json.loads(fit.data.tags[tag.MEMBERS])}
    assert fit.info.status == "FINISHED" and members and members <= set(range(trials))
    version = versions[0]
    if fit.data.tags[tag.ADOPTED] == "true":
        assert version.run_id == fit.info.run_id and parent.data.tags[tag.CHAMPION_FIT].startswith("ensemble")
    else:
        assert version.run_id in {r.info.run_id for r in runs}


def test_two_workers_share_a_journal_study_and_each_trial_runs_once(tracking: Path) -> None:
    space, storage = searchproc.write_space(tracking), str(tracking / "optuna.journal")
    out = searchproc.run(space, storage, cwd=tracking, trials=4, workers=2, study="journal-2w")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "started 2 worker process(es)" in out.stdout
    check_one_study_two_workers(MlflowClient(), storage, "journal-2w", trials=4)


def test_worker_command_passes_every_parameter_with_one_worker_and_the_resolved_study(tracking: Path) -> None:
    config = make_config(workers=3, data=searchproc.TINY_DATA, image_size=32)
    argv = workers.command(config)
    pairs = dict(zip(argv[4::2], argv[5::2]))
    assert argv[1:4] == ["-m", "bench", "search"]
    assert pairs["--workers"] == "1"
    assert pairs["--study"] == config.study_name and pairs["--storage"] == config.storage_url
    assert make_config(**{k[2:].replace("-", "_"): v for k, v in pairs.items()}) == \
        make_config(**{**vars(config), "workers": 1, "study": config.study_name, "storage": config.storage_url})


def test_workers_get_their_own_sampler_seed_and_the_coordinator_keeps_the_configured_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.PARENT_ENV, raising=False)
    assert workers.sampler_seed(7) == 7
    monkeypatch.setenv(workers.PARENT_ENV, "some-run")
    assert workers.sampler_seed(7) != 7


def test_a_process_is_dead_once_it_exits_and_other_hosts_are_never_judged(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        who = {**workers.identity(), "pid": child.pid, "start": workers._start_ticks(child.pid)}
        assert not workers.is_dead(who)
    finally:
        child.kill()
        child.wait()
    assert workers.is_dead(who)
    assert not workers.is_dead({**who, "host": "some-other-machine"})
    assert workers.is_dead({**workers.identity(), "start": "1"})  # our pid, but another process's start time


RACE = """
import sys, time
from pathlib import Path
import optuna
from bench.tracking import runs as tracking
from bench.search.engines.optuna_storage import make_storage
folder, me = Path(sys.argv[1]), sys.argv[2]
(folder / f"ready-{me}").touch()
while len(list(folder.glob("ready-*"))) < 2:  # both processes are imported: go at the same moment
    time.sleep(0.001)
optuna.create_study(study_name="race", storage=make_storage(f"sqlite:///{folder}/optuna.db"), load_if_exists=True)
tracking.client().search_registered_models()
"""


def test_two_processes_starting_at_once_on_fresh_sqlite_files_both_succeed(tracking: Path) -> None:
    # Without the file lock, 4 of 4 tries here crashed one process (duplicate column, UNIQUE alembic_version).
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tracking), name], env=searchproc.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in "ab"]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-1500:] for o in outputs)
    study = optuna.load_study(study_name="race", storage=make_storage(f"sqlite:///{tracking}/optuna.db"))
    assert study.trials == []
