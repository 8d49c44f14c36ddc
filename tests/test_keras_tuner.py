"""engine=keras-tuner: the same space through KerasTuner, recorded in MLflow exactly like the Optuna engine
(run structure, metric keys, artifacts, registered model), resumable, and conditional spaces on Bayesian."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bench import search
from bench.engines.keras_tuner_engine import project_dir
from bench.errors import BenchError
from tests.conftest import TEST_KEYS, TRIAL_ARTIFACTS, VAL_KEYS, children, tiny_config



@pytest.fixture(scope="module")
def finished(module_tracking: Path):
    config = tiny_config(module_tracking, engine="keras-tuner", tuner="random", trials=2, epochs=1)
    return config, search.run(config)


def test_trials_are_finished_child_runs_with_the_optuna_engines_params_metrics_and_artifacts(finished) -> None:
    config, result = finished
    c = MlflowClient()
    runs = children(c, result.parent_run_id)
    assert [r.info.run_name for r in runs] == ["trial-0", "trial-1"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["hemabench.state"] == "COMPLETE"
        assert run.data.tags["hemabench.engine"] == "keras-tuner"
        assert run.data.tags["hemabench.study"] == config.study_name
        assert {"learning_rate", "n_blocks", "optimizer", "batch_size", "epochs", "family"} <= set(run.data.params)
        assert not any(key.startswith("tuner/") for key in run.data.params)
        assert run.data.params["batch_norm"] in ("True", "False")  # the YAML's booleans, not KerasTuner's 0/1
        assert VAL_KEYS | {"best_epoch", "train_seconds", "n_params", "trial_seconds"} <= set(run.data.metrics)
        assert {m.step for m in c.get_metric_history(run.info.run_id, "val_accuracy")} == {1}  # one epoch
        assert TRIAL_ARTIFACTS <= {a.path for a in c.list_artifacts(run.info.run_id)}


def test_parent_run_has_the_leaderboard_and_test_metrics_and_the_best_model_is_registered(finished) -> None:
    config, result = finished
    c = MlflowClient()
    parent = c.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["hemabench.engine"] == "keras-tuner"
    assert TEST_KEYS | {"best_val_f1_macro", "trials_complete"} <= set(parent.data.metrics)
    assert {"leaderboard.csv", "leaderboard.html", "test_confusion_matrix.png", "test_roc_curve.html",
            "test_classification_report.json"} <= {a.path for a in c.list_artifacts(result.parent_run_id)}
    board = mlflow.artifacts.load_text(f"runs:/{result.parent_run_id}/leaderboard.csv").splitlines()
    assert len(board) == 3
    version = c.get_model_version_by_alias(config.registered_model, "champion")
    assert str(version.version) == str(result.model_version) and version.run_id == result.best["run_id"]


def test_tuner_state_lives_beside_the_tracking_db_and_a_rerun_resumes(finished) -> None:
    config, result = finished
    assert (project_dir() / config.study_name / "oracle.json").is_file()
    assert project_dir().parent == Path(mlflow.get_tracking_uri().removeprefix("sqlite:///")).parent
    again = search.run(config)  # the study already has its 2 trials: nothing new runs
    assert again.parent_run_id == result.parent_run_id
    assert len(children(MlflowClient(), result.parent_run_id)) == 2


def test_bayesian_oracle_runs_a_space_with_conditional_and_repeated_parameters(tracking: Path) -> None:
    result = search.run(tiny_config(tracking, engine="keras-tuner", tuner="bayesian", trials=3, epochs=1,
                                    register=False))
    runs = children(MlflowClient(), result.parent_run_id)
    assert [r.data.tags["hemabench.state"] for r in runs] == ["COMPLETE"] * 3
    for run in runs:  # only active parameters are logged: filters_i exists for i <= n_blocks
        blocks = int(run.data.params["n_blocks"])
        assert {f"filters_{i}" for i in range(1, 6)} & set(run.data.params) == {f"filters_{i}" for i in range(1, blocks + 1)}
        assert ("weight_decay" in run.data.params) == (run.data.params["optimizer"] == "adamw")


def test_a_user_error_in_a_trial_stops_the_keras_tuner_search_with_its_one_line_message(tracking: Path) -> None:
    config = tiny_config(tracking, engine="keras-tuner", space="mobilenet_v2", weights=str(tracking / "missing.h5"),
                         trials=3, register=False)
    with pytest.raises(BenchError, match="'weights' parameter must be imagenet, none or a path"):
        search.run(config)
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("tests").experiment_id],
                                      "tags.`hemabench.role` = 'trial'")
    assert [r.data.tags["hemabench.state"] for r in runs] == ["FAIL"]
