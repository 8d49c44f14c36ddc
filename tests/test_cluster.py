"""The README's several-machines recipe, run as written: a throwaway PostgreSQL, `mlflow server` on it with the
artifact proxy, a coordinator and two workers. Each "machine" has its own working directory, cache and home,
and reaches MLflow only over HTTP and Optuna only through PostgreSQL; one worker is SIGKILLed mid-trial and
Optuna's heartbeat (shortened with BENCH_HEARTBEAT_S) hands its trial to the other."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import mlflow
import optuna
import pytest
import requests
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench import paths
from bench.errors import ConfigError
from bench.reporting import leaderboard
from bench.search import make_config, workers
from bench.search.engines import optuna_engine
from bench.search.engines.optuna_storage import make_storage
from bench.tracking import dblock
from tests import pg, searchproc
from tests.conftest import TINY_DATA

T = TypeVar("T")
TRIALS, STUDY, HEARTBEAT_S = 2, "cluster", 2
SEARCH = (f"--data {TINY_DATA} --space tiny.yaml --trials {TRIALS} --study {STUDY} --epochs 1 --image-size 32 "
          f"--experiment tests --registered-model tests-model --sampler random --pruner none")
LEFTOVERS = ("mlflow.db", "mlruns", "mlartifacts", "optuna.journal", "*.png", "*.html", "*.keras", "*.csv")


def recipe() -> tuple[str, str, str]:
    """The README's three command lines (tracking server, coordinator, worker), verbatim."""
    text = (paths.PROJECT_ROOT / "README.md").read_text()
    block = text.split("tests/test_cluster.py` runs exactly them", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(lines) == 3, lines
    return lines[0], lines[1], lines[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine(root: Path, name: str, **env: str) -> tuple[Path, dict[str, str]]:
    """A working directory (holding the space file), cache and home of their own, and the recipe's variables."""
    work = root / name / "work"
    work.mkdir(parents=True)
    searchproc.write_space(work)
    bin_dir = str(Path(sys.executable).parent)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BENCH_"))}
    return work, {**base, "PATH": f"{bin_dir}:{base.get('PATH', '')}", "PYTHONPATH": str(paths.PROJECT_ROOT),
                  "HOME": str(root / name), "BENCH_CACHE_DIR": str(root / name / "cache"), "BENCH_HOST": name,
                  "BENCH_HEARTBEAT_S": str(HEARTBEAT_S), "TF_CPP_MIN_LOG_LEVEL": "2", "SEARCH": SEARCH, **env}


def launch(line: str, work: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """One recipe line through bash; bash execs a single command, so the process is the command (a signal reaches it)."""
    return subprocess.Popen(["bash", "-c", line], cwd=work, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)


def wait_for(check: Callable[[], T | None], what: str, timeout: float, procs: dict[str, subprocess.Popen],
             logs: Path) -> T:
    """Poll `check` until it answers; fail at once, with the log, if a process that should live has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for name, p in procs.items():
            if p.poll() is not None and name != "killed":
                pytest.fail(f"{name} exited ({p.returncode}) while waiting for {what}:\n" + tail(logs, name))
        time.sleep(0.2)
    pytest.fail(f"no {what} after {timeout:.0f} s:\n" + "\n".join(tail(logs, n) for n in procs))


def tail(logs: Path, name: str) -> str:
    path = logs / f"{name}.log"
    return f"--- {name}\n" + (path.read_text()[-3000:] if path.exists() else "(no log)")


@pytest.fixture(scope="module")
def cluster() -> Iterator[pg.Cluster]:
    if pg.bin_dir() is None:
        pytest.skip("PostgreSQL server not installed: no /usr/lib/postgresql/*/bin/initdb (.ci/run installs "
                    "Debian's postgresql)")
    c = pg.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.mark.slow
@pytest.mark.postgres
def test_readme_recipe_runs_a_study_on_three_machines_through_the_tracking_server(cluster: pg.Cluster,
                                                                                   tmp_path: Path) -> None:
    started = time.perf_counter()
    server_line, coordinator_line, worker_line = recipe()
    port, artifacts, logs = _free_port(), tmp_path / "t" / "mlartifacts", tmp_path / "logs"
    logs.mkdir()
    optuna_db = cluster.create_database("optuna")
    shared = {"T": "127.0.0.1", "PORT": str(port), "ARTIFACTS": str(artifacts), "OPTUNA_DB": optuna_db,
              "MLFLOW_DB": cluster.create_database("mlflow").replace("postgresql://", "postgresql+psycopg2://")}
    uri = f"http://127.0.0.1:{port}"
    procs: dict[str, subprocess.Popen] = {}
    try:
        work, env = machine(tmp_path, "t", **shared)
        procs["server"] = launch(server_line, work, env, logs / "server.log")
        work, env = machine(tmp_path, "a", **shared)  # A imports while T migrates its database; MLflow's client retries
        procs["a"] = launch(coordinator_line, work, env, logs / "a.log")
        wait_for(lambda: _answers(f"{uri}/health"), "tracking server", 180, procs, logs)
        print(f"tracking server up after {time.perf_counter() - started:.0f} s")
        parent = wait_for(lambda: _parent_id(logs / "a.log"), "BENCH_PARENT_RUN_ID line", 180, procs, logs)
        print(f"coordinator ready after {time.perf_counter() - started:.0f} s")
        for name in "bc":
            work, env = machine(tmp_path, name, **shared, PARENT=parent)
            procs[name] = launch(worker_line, work, env, logs / f"{name}.log")

        # One storage (one SQLAlchemy engine) for every poll: a study loaded from a URL opens an engine, and a
        # connection, each time; on a loaded machine the polls reached the server's 100 connections.
        storage = make_storage(optuna_db)
        client = MlflowClient(uri, uri)
        victim = wait_for(lambda: _training(storage, client), "trial training on a worker", 180, procs, logs)
        procs[victim].send_signal(signal.SIGKILL)
        procs["killed"] = procs.pop(victim)
        print(f"killed worker {victim} mid-trial after {time.perf_counter() - started:.0f} s")
        for name in ("a", *({"b", "c"} - {victim})):
            try:
                rc = procs[name].wait(timeout=300)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after 300 s:\n" + "\n".join(tail(logs, n) for n in procs))
            assert rc == 0, tail(logs, name)
        assert procs["killed"].wait(timeout=10) == -signal.SIGKILL
        print(f"study done after {time.perf_counter() - started:.0f} s")

        check_study(storage, victim)
        check_mlflow(client, parent, artifacts)
        mlflow.set_tracking_uri(uri)  # the leaderboard reads back over HTTP
        board = leaderboard.board([client.get_experiment_by_name("tests").experiment_id], study=STUDY)
        assert sorted(board["state"]) == ["COMPLETE"] * TRIALS + ["FAIL"]
        for name in "abc":  # nothing a run logged stayed on a worker's machine
            found = [p for pattern in LEFTOVERS for p in (tmp_path / name / "work").rglob(pattern)]
            assert not found, found
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    print(f"cluster test: {time.perf_counter() - started:.0f} s")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _parent_id(log: Path) -> str | None:
    found = re.search(r"BENCH_PARENT_RUN_ID=(\w+)", log.read_text()) if log.exists() else None
    return found.group(1) if found else None


def _training(storage: optuna.storages.BaseStorage, c: MlflowClient) -> str | None:
    """The worker machine of a trial that is training now (its MLflow run is open), if any."""
    try:
        study = optuna.load_study(study_name=STUDY, storage=storage)
    except KeyError:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host = t.user_attrs.get("worker", {}).get("host")
        experiment = c.get_experiment_by_name("tests").experiment_id
        if host in ("b", "c") and c.search_runs([experiment], f"tags.`hemabench.trial` = '{t.number}' and "
                                                              f"attributes.status = 'RUNNING'"):
            return host
    return None


def check_study(storage: optuna.storages.BaseStorage, victim: str) -> None:
    """TRIALS complete trials, each once; the killed one failed and came back with its parameters on the
    other worker."""
    trials = optuna.load_study(study_name=STUDY, storage=storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == TRIALS and len(trials) == TRIALS + 1, [(t.number, t.state) for t in trials]
    assert failed.user_attrs["worker"]["host"] == victim
    (retry,) = [t for t in complete if t.system_attrs.get("failed_trial") == failed.number]
    assert retry.params == failed.params and retry.user_attrs["worker"]["host"] not in (victim, "a")
    assert {t.user_attrs["worker"]["host"] for t in trials} <= {"b", "c"}  # the coordinator ran none


def check_mlflow(c: MlflowClient, parent: str, artifacts: Path) -> None:
    """One FINISHED parent; each trial number one run, FINISHED but for the killed trial's (ended KILLED by the
    coordinator); their files and the registered model in the server's artifact directory."""
    assert c.get_run(parent).info.status == "FINISHED"
    runs = searchproc.trial_runs(c, STUDY)
    assert len({r.data.tags["hemabench.trial"] for r in runs}) == len(runs) == TRIALS + 1
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * TRIALS + ["KILLED"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent}
    for r in runs:
        assert r.info.artifact_uri.startswith("mlflow-artifacts:/"), r.info.artifact_uri
        if r.info.status == "FINISHED":
            files = {p.name for p in (artifacts / r.info.artifact_uri.removeprefix("mlflow-artifacts:/")).iterdir()}
            assert "confusion_matrix.png" in files, files
    (version,) = c.search_model_versions("name='tests-model'")
    model_id = re.fullmatch(r"models:/(m-\w+)", version.source).group(1)
    assert (artifacts / runs[0].info.experiment_id / "models" / model_id / "artifacts" / "MLmodel").exists()


def test_heartbeat_interval_comes_from_the_environment_with_four_times_the_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.HEARTBEAT_ENV, raising=False)
    assert workers.heartbeat() == (30, 120)
    monkeypatch.setenv(workers.HEARTBEAT_ENV, "2")
    assert workers.heartbeat() == (2, 8)
    monkeypatch.setenv(workers.HEARTBEAT_ENV, "0.5")
    with pytest.raises(ConfigError, match="BENCH_HEARTBEAT_S must be a whole number of seconds >= 1. Got '0.5'"):
        workers.heartbeat()


def test_a_worker_refuses_a_storage_without_its_coordinators_study(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.PARENT_ENV, "some-run")
    config = make_config(storage=str(tmp_path / "optuna.journal"), study="elsewhere", data=TINY_DATA)
    with pytest.raises(ConfigError, match="study 'elsewhere' is not in storage .*pass the coordinator's --storage"):
        optuna_engine.create_study(config)
    with pytest.raises(ConfigError, match="'workers' parameter must be at least 1 in a worker"):
        workers.start(make_config(workers=0, data=TINY_DATA), "some-run")


def test_storage_passwords_are_hidden_in_output_and_parameters() -> None:
    assert dblock.redact("postgresql://hema:secret@db:5432/optuna") == "postgresql://hema:***@db:5432/optuna"
    assert dblock.redact("postgresql://hema@db/optuna") == "postgresql://hema@db/optuna"
    assert dblock.redact("runs/optuna.journal") == "runs/optuna.journal"
