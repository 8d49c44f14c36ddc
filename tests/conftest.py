"""Shared fixtures. Every test that tracks runs gets its own sqlite store, cache and working directory."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

TINY_DATA = "synthetic?n_per_class=10"
# What every engine must log: final validation keys on each trial, test keys on the parent, trial artifacts.
VAL_KEYS = {"val_accuracy", "val_precision_macro", "val_recall_macro", "val_f1_macro", "val_roc_auc_macro", "val_loss"}
TEST_KEYS = {k.replace("val_", "test_") for k in VAL_KEYS}
TRIAL_ARTIFACTS = {"confusion_matrix.png", "confusion_matrix.html", "roc_curve.png", "roc_curve.html",
                   "classification_report.json"}


REQUIRE_SYSTEM_ENV = "BENCH_REQUIRE_SYSTEM_TESTS"  # `.ci/run` sets it: a missing system package fails, not skips


def need_system(found: object, message: str) -> None:
    """Skip with `message` (what is missing and how to install it) when `found` is falsy; fail instead when
    BENCH_REQUIRE_SYSTEM_TESTS=1, so that CI, which installs every system package, never skips silently."""
    if found:
        return
    if os.environ.get(REQUIRE_SYSTEM_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_SYSTEM_ENV}=1)", pytrace=False)
    pytest.skip(message)


def children(c, parent: str) -> list:
    """The trial runs among the child runs of `parent`, by trial number."""
    runs = c.search_runs([c.get_run(parent).info.experiment_id],
                         f"tags.mlflow.parentRunId = '{parent}' and tags.`hemabench.role` = 'trial'")
    return sorted(runs, key=lambda r: int(r.data.tags["hemabench.trial"]))


@pytest.fixture(autouse=True)
def _tracking_uri_follows_environment():
    """Code under test sets MLflow's tracking URI globally (as `mlflow` itself does); a test starts from its own
    environment's store, not the previous test's."""
    import mlflow

    from bench import paths

    mlflow.set_tracking_uri(paths.tracking_uri())
    yield


@functools.cache
def _template_store() -> Path:
    """An empty MLflow sqlite store, created and migrated once per test process; removed at exit."""
    from mlflow.tracking import MlflowClient

    folder = tempfile.mkdtemp(prefix="hemabench-store-")
    atexit.register(shutil.rmtree, folder, True)
    template = Path(folder) / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()  # creates and migrates it
    return template


def store_uri(folder: Path) -> str:
    """The URI of a new, empty MLflow sqlite store in `folder`: a copy of a store migrated once per session, since
    migrating a fresh one costs 1.6 s in process and ~6 s in a new process (../shared/NOTES.md), a hundred times
    over in this suite. The copy's Default experiment keeps its artifacts under `folder`, as a fresh store's would."""
    db = folder / "mlflow.db"
    shutil.copyfile(_template_store(), db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    (str(folder / "mlruns" / "0"),))
    con.close()
    return f"sqlite:///{db}"


def isolate(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point MLflow (sqlite), the decode cache and the working directory at `folder`."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri(folder))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(folder / "cache"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return folder


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated MLflow store (sqlite in tmp_path), decode cache and working directory; returns tmp_path."""
    return isolate(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def module_tracking(tmp_path_factory: pytest.TempPathFactory):
    """`tracking` shared by a module's tests, for an expensive setup (a search) that several tests read."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield isolate(tmp_path_factory.mktemp("tracking"), monkeypatch)


def tiny_config(tmp_path: Path, **overrides):
    """The real search configuration, shrunk: tiny synthetic data, 32 px, 1 epoch, 2 trials; no final-fit ensemble
    (tests/test_ensemble.py turns it on), so the best trial is what gets registered."""
    from bench.search import make_config

    values = dict(data=TINY_DATA, trials=2, epochs=1, image_size=32, experiment="tests",
                  storage=str(tmp_path / "optuna.journal"), registered_model="tests-model", ensemble=False)
    values.update(overrides)
    return make_config(**values)
