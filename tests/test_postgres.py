"""Two worker processes on one study in a real PostgreSQL (Optuna's RDB storage and MLflow's tracking store),
in a throwaway cluster this test starts on a loopback port and stops."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from mlflow.tracking import MlflowClient

from tests import pg, searchproc
from tests.conftest import need_system
from tests.test_workers import check_one_study_two_workers

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def cluster() -> Iterator[pg.Cluster]:
    need_system(pg.bin_dir(), "PostgreSQL server not installed: no /usr/lib/postgresql/*/bin/initdb "
                              "(apt-get install postgresql; .ci/run installs it)")
    started = time.perf_counter()
    c = pg.start()
    print(f"PostgreSQL cluster up in {time.perf_counter() - started:.1f} s on port {c.port}")
    try:
        yield c
    finally:
        c.stop()


def test_two_workers_share_a_postgresql_study_and_each_trial_runs_once(
        cluster: pg.Cluster, tracking: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    storage = cluster.create_database("optuna")  # plain postgresql:// as a user writes it
    mlflow_uri = cluster.create_database("mlflow").replace("postgresql://", "postgresql+psycopg2://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    out = searchproc.run(searchproc.write_space(tracking), storage, cwd=tracking, trials=4, workers=2, study="pg-2w")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    check_one_study_two_workers(MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri), storage, "pg-2w",
                                trials=4)
    print(f"two workers x 4 trials on PostgreSQL: {time.perf_counter() - started:.1f} s")
