"""Shared fixtures. Every test that tracks runs gets its own sqlite store, cache and working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_DATA = "synthetic?n_per_class=10"


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated MLflow store (sqlite in tmp_path), decode cache and working directory; returns tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def tiny_config(tmp_path: Path, **overrides):
    """The real search configuration, shrunk: tiny synthetic data, 32 px, 1 epoch, 2 trials."""
    from bench.config import make_config

    values = dict(data=TINY_DATA, trials=2, epochs=1, image_size=32, experiment="tests",
                  storage=str(tmp_path / "optuna.journal"), registered_model="tests-model")
    values.update(overrides)
    return make_config(**values)
