"""engine=keras-tuner: the same space through KerasTuner, recorded in MLflow exactly like the Optuna engine
(run structure, metric keys, artifacts, registered model), resumable, and conditional spaces on Bayesian."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bench.search import study as search
from bench.search.engines.keras_tuner_engine import project_dir
from bench.errors import BenchError
from tests.conftest import children, tiny_config



@pytest.fixture(scope="module")
def finished(module_tracking: Path):
    config = tiny_config(module_tracking, engine="keras-tuner", tuner="random", trials=2, epochs=1)
    return config, search.run(config)


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
    assert len(runs) == 3
    for run in runs:  # the space's cost ceiling may reject a heavy draw before training; nothing else may stop one
        state = run.data.tags["hemabench.state"]
        assert state == "COMPLETE" or (state == "PRUNED" and "max_mflops_per_image" in run.data.tags["hemabench.reason"])
    assert any(r.data.tags["hemabench.state"] == "COMPLETE" for r in runs)
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
