"""One study, one parent run, also under `mlflow run`: a rerun continues the study's parent, the project's own run
records the invocation and points at it, and runs whose process died are ended KILLED with the reason.

The end-to-end test runs `mlflow run <copy of the project> -e search --env-manager local`, SIGKILLs its whole
process group mid-trial, and runs the same command again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench import paths
from bench.search import workers
from bench.search.study import end_dead_runs
from bench.tracking import client as tracking_client
from bench.tracking import tags as tag
from tests import searchproc
from tests.conftest import TINY_DATA
from tests.test_resume import dead_identity, wait_for_running_trial


def test_a_parent_whose_process_died_is_ended_killed_with_the_reason_and_a_live_one_is_left(tracking: Path) -> None:
    c = tracking_client()
    experiment = c.create_experiment("tests")

    def run(role: str, who: dict) -> str:
        return c.create_run(experiment, tags={tag.STUDY: "s", tag.ROLE: role, tag.PROCESS: json.dumps(who)}).info.run_id

    dead_parent, dead_invocation = run(tag.PARENT, dead_identity()), run(tag.INVOCATION_ROLE, dead_identity())
    live = run(tag.PARENT, workers.identity())
    assert sorted(end_dead_runs(c, experiment, "s")) == sorted([dead_parent, dead_invocation])
    for run_id in (dead_parent, dead_invocation):
        ended = c.get_run(run_id)
        assert ended.info.status == "KILLED" and "died (killed or crashed)" in ended.data.tags[tag.REASON]
    assert c.get_run(live).info.status == "RUNNING" and end_dead_runs(c, experiment, "s") == []


@pytest.mark.parametrize(("run_in", "given", "ok"), [
    ("Default", "hemabench", False),  # bare `mlflow run`: the parameter's default, the run in Default
    ("Default", "mine", False),  # -P experiment=mine without --experiment-name mine
    ("other", "mine", False),  # both given, and different
    ("other", "hemabench", True),  # --experiment-name other (as `make search EXPERIMENT=other`), no -P experiment
    ("mine", "mine", True),
])
def test_under_mlflow_run_an_experiment_parameter_the_run_is_not_in_stops_with_what_to_pass(
        module_tracking: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, run_in: str, given: str,
        ok: bool) -> None:
    from bench import cli

    c = tracking_client()
    experiment = c.get_experiment_by_name(run_in) or c.get_experiment(c.create_experiment(run_in))
    monkeypatch.setenv("MLFLOW_RUN_ID", c.create_run(experiment.experiment_id).info.run_id)
    argv = ["search", "--experiment", given, "--space", "no-such-space"]  # stops before any training
    capsys.readouterr()  # the store's creation log
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    if ok:
        assert "no-such-space" in err
    else:
        assert err == (f"error: under `mlflow run` every run goes to the experiment named by --experiment-name, "
                       f"here '{run_in}', not experiment='{given}': pass `--experiment-name {given}` to mlflow run")


def project_copy(folder: Path) -> Path:
    """What `mlflow run` needs of the project, copied: its runs then write nothing into the source tree."""
    root = folder / "project"
    for name in ("MLproject", "conda.yaml"):
        root.mkdir(exist_ok=True)
        shutil.copy2(paths.PROJECT_ROOT / name, root / name)
    for name in ("bench", "search_spaces", "datasets"):
        shutil.copytree(paths.PROJECT_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def mlflow_run(project: Path, space: Path, storage: str, **params: object) -> list[str]:
    values = dict(data=TINY_DATA, space=space, trials=2, epochs=1, image_size=32, experiment="tests",
                  storage=storage, registered_model="tests-model", sampler="random", pruner="none", **params)
    argv = [sys.executable, "-m", "mlflow", "run", str(project), "-e", "search", "--env-manager", "local",
            "--experiment-name", "tests"]
    for key, value in values.items():
        argv += ["-P", f"{key}={value}"]
    return argv


@pytest.mark.slow
def test_mlflow_run_killed_mid_trial_then_rerun_keeps_one_parent_and_ends_every_run(tracking: Path) -> None:
    project, space = project_copy(tracking), searchproc.write_space(tracking)
    argv = mlflow_run(project, space, str(tracking / "optuna.journal"), study="mr")
    # `mlflow run` starts the entry point's `python` from PATH: this interpreter's.
    env = searchproc.env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    c = tracking_client()
    c.create_experiment("tests")  # here, so that its artifacts live under this test's folder
    log = tracking / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(argv, cwd=tracking, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            killed_trial = wait_for_running_trial(c, first, log, number=1)
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # `mlflow run` and the entry point it started
            first.wait()
    (parent,) = searchproc.parents(c, "mr")
    assert parent.info.status == "RUNNING" and c.get_run(killed_trial).info.status == "RUNNING"

    second = subprocess.run(argv, cwd=tracking, env=env, capture_output=True, text=True, timeout=300)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert f"ended parent run {parent.info.run_id} KILLED: its process" in out
    assert "trial 1 FAIL: worker process" in out

    (again,) = searchproc.parents(c, "mr")  # one study, one parent: the first `mlflow run`'s run
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert tag.REASON not in again.data.tags
    runs = c.search_runs([again.info.experiment_id], max_results=1000)
    assert "RUNNING" not in {r.info.status for r in runs}
    (invocation,) = [r for r in runs if r.data.tags.get(tag.ROLE) == tag.INVOCATION_ROLE]
    assert invocation.data.tags[tag.STUDY_PARENT] == parent.info.run_id == invocation.data.tags[tag.PARENT_RUN_ID]
    assert invocation.info.status == "FINISHED" and invocation.data.params["study"] == "mr"
    trials = searchproc.trial_runs(c, "mr")
    assert [r.data.tags[tag.STATE] for r in trials].count("COMPLETE") == 2
    killed = c.get_run(killed_trial)
    assert killed.info.status != "RUNNING" and "died during the trial" in killed.data.tags[tag.REASON]
    assert len(c.search_model_versions("name='tests-model'")) == 1
