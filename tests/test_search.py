"""A tiny real search end to end: MLflow run structure, metric keys, artifacts, registry, resume."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bench import search
from tests.conftest import TEST_KEYS, TRIAL_ARTIFACTS, VAL_KEYS, children, tiny_config



@pytest.fixture(scope="module")
def finished(module_tracking: Path):
    config = tiny_config(module_tracking, trials=2, epochs=2)
    return config, search.run(config)


def test_every_trial_is_a_finished_child_run_with_params_curves_metrics_and_artifacts(finished) -> None:
    config, result = finished
    c = MlflowClient()
    runs = children(c, result.parent_run_id)
    assert [r.info.run_name for r in runs] == ["trial-0", "trial-1"]
    for run in runs:
        assert run.info.status in ("FINISHED", "KILLED")
        assert run.data.tags["hemabench.state"] in ("COMPLETE", "PRUNED")
        assert run.data.tags["hemabench.study"] == config.study_name
        assert run.data.tags["hemabench.space"] == "scratch_cnn"
        assert run.data.tags["hemabench.dataset_fingerprint"]
        assert {"learning_rate", "n_blocks", "optimizer", "batch_size"} <= set(run.data.params)
        curve = sorted(c.get_metric_history(run.info.run_id, "val_accuracy"), key=lambda m: (m.step, m.timestamp))
        epochs = 2 if run.data.tags["hemabench.state"] == "COMPLETE" else len(curve)
        assert [m.step for m in curve][:epochs] == list(range(1, epochs + 1))
        for key in ("loss", "accuracy", "val_loss"):
            assert c.get_metric_history(run.info.run_id, key)
        if run.data.tags["hemabench.state"] == "COMPLETE":
            assert VAL_KEYS <= set(run.data.metrics)
            # The latest value is the kept (best-epoch) model's, not the last epoch's.
            best_epoch = int(run.data.metrics["best_epoch"])
            assert run.data.metrics["val_accuracy"] == pytest.approx(curve[best_epoch - 1].value)
            assert TRIAL_ARTIFACTS <= {a.path for a in c.list_artifacts(run.info.run_id)}


def test_parent_run_holds_best_test_metrics_leaderboard_figures_and_splits(finished) -> None:
    _, result = finished
    c = MlflowClient()
    parent = c.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert TEST_KEYS <= set(parent.data.metrics)
    assert "best_val_f1_macro" in parent.data.metrics
    artifacts = {a.path for a in c.list_artifacts(result.parent_run_id)}
    assert {"leaderboard.csv", "leaderboard.html", "splits.csv", "optuna_optimization_history.html",
            "test_confusion_matrix.png", "test_roc_curve.html", "test_classification_report.json"} <= artifacts
    board = mlflow.artifacts.load_text(f"runs:/{result.parent_run_id}/leaderboard.csv").splitlines()
    assert len(board) == 3  # header + 2 trials
    assert result.test_metrics["test_accuracy"] == pytest.approx(parent.data.metrics["test_accuracy"])


def test_best_model_is_registered_as_champion_and_predicts_probabilities(finished) -> None:
    config, result = finished
    c = MlflowClient()
    version = c.get_model_version_by_alias(config.registered_model, "champion")
    assert version.version == result.model_version
    assert version.tags["dataset_fingerprint"] and version.tags["space"] == "scratch_cnn"
    model = mlflow.pyfunc.load_model(f"models:/{config.registered_model}@champion")
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    out = model.predict(images)
    probs = out[[c for c in out.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape == (3, 8) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_running_the_same_command_again_resumes_the_study(tracking: Path) -> None:
    first = search.run(tiny_config(tracking, trials=1))
    second = search.run(tiny_config(tracking, trials=2))
    c = MlflowClient()
    assert second.parent_run_id == first.parent_run_id  # the study's parent run is resumed, not duplicated
    assert [r.info.run_name for r in children(c, first.parent_run_id)] == ["trial-0", "trial-1"]
    third = search.run(tiny_config(tracking, trials=2))  # nothing left to do: no new trial, no new version
    assert c.get_run(first.parent_run_id).data.tags["resumed_with.trials"] == "2"
    assert len(children(c, third.parent_run_id)) == 2
    versions = c.search_model_versions("name='tests-model'")
    assert len({v.run_id for v in versions}) == len(versions)
