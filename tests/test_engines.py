"""Every registered engine, end to end on the same tiny search: MLflow run structure, metric keys, artifacts and the
registry are the same whichever engine ran the trials (parametrized over `list_engines()`)."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bench import machine, search
from bench.search import list_engines
from tests.conftest import TEST_KEYS, TRIAL_ARTIFACTS, VAL_KEYS, children, isolate, tiny_config

# KerasTuner's default oracle (Hyperband) picks its own epochs; random search trains every trial for `epochs`.
ENGINE_OPTIONS = {"keras-tuner": {"tuner": "random"}}


@pytest.fixture(scope="module", params=list_engines())
def finished(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        tracking = isolate(tmp_path_factory.mktemp(f"engine-{request.param}"), monkeypatch)
        config = tiny_config(tracking, engine=request.param, trials=2, epochs=2, **ENGINE_OPTIONS.get(request.param, {}))
        yield config, search.run(config)


def test_every_trial_is_a_finished_child_run_with_params_curves_metrics_and_artifacts(finished) -> None:
    config, result = finished
    c = MlflowClient()
    runs = children(c, result.parent_run_id)
    assert [r.info.run_name for r in runs] == ["trial-0", "trial-1"]
    for run in runs:
        assert run.info.status in ("FINISHED", "KILLED")
        assert run.data.tags["hemabench.state"] in ("COMPLETE", "PRUNED")
        assert run.data.tags["hemabench.engine"] == config.engine
        assert run.data.tags["hemabench.study"] == config.study_name
        assert run.data.tags["hemabench.space"] == "scratch_cnn"
        assert run.data.tags["hemabench.dataset_fingerprint"]
        assert f"{len(os.sched_getaffinity(0))} CPUs" in run.data.tags["hemabench.machine"]  # what its speed means
        assert {"learning_rate", "n_blocks", "optimizer", "batch_size", "epochs", "family"} <= set(run.data.params)
        assert not any(key.startswith("tuner/") for key in run.data.params)
        assert run.data.params["batch_norm"] in ("True", "False")  # the YAML's booleans, not KerasTuner's 0/1
        curve = sorted(c.get_metric_history(run.info.run_id, "val_accuracy"), key=lambda m: (m.step, m.timestamp))
        epochs = 2 if run.data.tags["hemabench.state"] == "COMPLETE" else len(curve)
        assert [m.step for m in curve][:epochs] == list(range(1, epochs + 1))
        for key in ("loss", "accuracy", "val_loss"):
            assert c.get_metric_history(run.info.run_id, key)
        if run.data.tags["hemabench.state"] == "COMPLETE":
            assert VAL_KEYS | {"best_epoch", "train_seconds", "n_params", "trial_seconds"} <= set(run.data.metrics)
            # The latest value is the kept (best-epoch) model's, not the last epoch's.
            best_epoch = int(run.data.metrics["best_epoch"])
            assert run.data.metrics["val_accuracy"] == pytest.approx(curve[best_epoch - 1].value)
            assert TRIAL_ARTIFACTS <= {a.path for a in c.list_artifacts(run.info.run_id)}


def test_parent_run_holds_best_test_metrics_leaderboard_and_splits(finished) -> None:
    config, result = finished
    c = MlflowClient()
    parent = c.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["hemabench.engine"] == config.engine
    assert parent.data.tags["hemabench.machine"] == machine.describe()  # TensorFlow is loaded in both processes
    assert TEST_KEYS | {"best_val_f1_macro", "trials_complete"} <= set(parent.data.metrics)
    artifacts = {a.path for a in c.list_artifacts(result.parent_run_id)}
    assert {"leaderboard.csv", "leaderboard.html", "splits.csv", "test_confusion_matrix.png", "test_roc_curve.html",
            "test_classification_report.json"} <= artifacts
    if config.engine == "optuna":  # the engine's own figures
        assert "optuna_optimization_history.html" in artifacts
    board = mlflow.artifacts.load_text(f"runs:/{result.parent_run_id}/leaderboard.csv").splitlines()
    assert len(board) == 3  # header + 2 trials
    assert result.test_metrics["test_accuracy"] == pytest.approx(parent.data.metrics["test_accuracy"])


def test_best_model_is_registered_as_champion_and_predicts_probabilities(finished) -> None:
    config, result = finished
    c = MlflowClient()
    version = c.get_model_version_by_alias(config.registered_model, "champion")
    assert str(version.version) == str(result.model_version) and version.run_id == result.best["run_id"]
    assert version.tags["dataset_fingerprint"] and version.tags["space"] == "scratch_cnn"
    model = mlflow.pyfunc.load_model(f"models:/{config.registered_model}@champion")
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    out = model.predict(images)
    probs = out[[c for c in out.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape == (3, 8) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_every_engine_declares_its_options_and_only_shared_storage_engines_take_workers() -> None:
    from bench.search.engines import keras_tuner_engine

    assert set(search.ENGINES.get("keras-tuner").options["tuner"]) == set(keras_tuner_engine.TUNERS)
    for name in list_engines():
        spec = search.ENGINES.get(name)
        assert spec.shared_storage == hasattr(spec.load(), "prepare")
        assert spec.options and all(field in search.SearchConfig.__dataclass_fields__ for field in spec.options)
