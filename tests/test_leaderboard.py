"""The leaderboard across studies, engines and spaces, and the MLflow UI view built from it, on a real MLflow store
whose trial runs carry the tags `bench.trial` writes (no training: the board only reads runs)."""

from __future__ import annotations

import base64
import json
import re
import zlib
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from bench import cli
from bench.reporting import leaderboard
from bench.search import finish as summary
from bench.reporting import ui
from bench.tracking import runs as bench_tracking

# (study, engine, space, trial, state, val_f1_macro, val_loss, params)
TRIALS = [
    ("cnn-a", "optuna", "scratch_cnn", 0, "COMPLETE", 0.70, 0.9, {"n_blocks": 3, "learning_rate": 0.001}),
    ("cnn-a", "optuna", "scratch_cnn", 1, "COMPLETE", 0.82, 0.6, {"n_blocks": 4, "learning_rate": 0.003}),
    ("cnn-a", "optuna", "scratch_cnn", 2, "PRUNED", None, None, {"n_blocks": 2, "learning_rate": 0.1}),
    ("mnv2-b", "keras-tuner", "mobilenet_v2", 0, "COMPLETE", 0.91, 0.3, {"backbone": "mobilenet_v2"}),
    ("mnv2-b", "keras-tuner", "mobilenet_v2", 1, "FAIL", None, None, {"backbone": "mobilenet_v2"}),
    ("mnv2-b", "keras-tuner", "mobilenet_v2", 2, "COMPLETE", 0.55, 1.2, {"backbone": "mobilenet_v2"}),
]


@pytest.fixture(scope="module")
def store(module_tracking: Path) -> str:
    c = bench_tracking.client()
    experiment_id = bench_tracking.experiment_id_for(c, "board")
    for study, engine, space, number, state, f1, loss, params in TRIALS:
        parent = summary.previous_parent(c, experiment_id, study) or c.create_run(
            experiment_id, run_name=study, tags={"hemabench.study": study, "hemabench.role": "parent"}).info.run_id
        run_id = bench_tracking.start_child(c, experiment_id, parent, name=f"trial-{number}", tags={
            "hemabench.study": study, "hemabench.engine": engine, "hemabench.space": space, "hemabench.role": "trial",
            "hemabench.trial": str(number), "hemabench.state": state, "hemabench.objective": "val_f1_macro"})
        metrics = {"val_f1_macro": f1, "val_loss": loss, "val_accuracy": f1} if f1 is not None else {}
        bench_tracking.log_batch(c, run_id, metrics=metrics, params=params)
    return experiment_id


def test_board_ranks_every_study_complete_first_then_by_objective(store: str) -> None:
    board = leaderboard.board([store])
    assert list(zip(board["study"], board["trial"], board["state"])) == [
        ("mnv2-b", 0, "COMPLETE"), ("cnn-a", 1, "COMPLETE"), ("cnn-a", 0, "COMPLETE"), ("mnv2-b", 2, "COMPLETE"),
        ("cnn-a", 2, "PRUNED"), ("mnv2-b", 1, "FAIL")]
    assert set(board["engine"]) == {"optuna", "keras-tuner"}
    assert {"params.n_blocks", "params.backbone", "run_id", "run_name"} <= set(board.columns)


def test_a_loss_objective_sorts_ascending(store: str) -> None:
    board = leaderboard.board([store], objective="val_loss")
    assert list(board["val_loss"].head(4)) == [0.3, 0.6, 0.9, 1.2]


def test_study_filter_and_summary_read_the_same_board(store: str) -> None:
    one = leaderboard.board([store], study="cnn-a")
    assert set(one["study"]) == {"cnn-a"} and list(one["trial"]) == [1, 0, 2]
    pd.testing.assert_frame_equal(summary.leaderboard(store, "cnn-a", "val_f1_macro"), one)


def test_default_objective_is_the_one_the_studies_used(store: str) -> None:
    assert leaderboard.usual_objective(leaderboard.trial_runs([store])) == "val_f1_macro"
    assert leaderboard.usual_objective(pd.DataFrame()) == leaderboard.DEFAULT_OBJECTIVE


def test_cli_table_names_studies_and_ranks(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["leaderboard", "--experiment", "board"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("experiment board: 6 trials from 2 studies (cnn-a, mnv2-b), best first by "
                                   "val_f1_macro")
    rows = out.splitlines()[2:]
    assert rows[0].split()[:5] == ["1", "mnv2-b", "keras-tuner", "mobilenet_v2", "0"]
    assert "n_blocks=4" in rows[1] and "learning_rate=0.003" in rows[1]


def test_cli_csv_and_html_to_files(store: str, tmp_path: Path) -> None:
    assert cli.main(["leaderboard", "--experiment", "board", "--output", "csv", "--out", str(tmp_path / "b.csv"),
                     "--top", "3"]) == 0
    csv = pd.read_csv(tmp_path / "b.csv")
    assert list(csv["val_f1_macro"]) == [0.91, 0.82, 0.70]
    assert cli.main(["leaderboard", "--experiment", "board", "--study", "mnv2-b", "--output", "html",
                     "--out", str(tmp_path / "b.html")]) == 0
    html = (tmp_path / "b.html").read_text()
    assert html.startswith("<table") and "<th>study</th>" in html
    assert re.findall(r"<tr>\s*<td>(\d+)</td>", html) == ["0", "2", "1"]  # first column: trial


def test_unknown_experiment_is_one_line_exit_2(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["leaderboard", "--experiment", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: experiment 'nope' does not exist at sqlite:") and "board" in err
    assert "\n" not in err


def test_ui_view_sorts_by_objective_and_shows_metric_param_and_tag_columns(store: str) -> None:
    view = ui.leaderboard_view(leaderboard.trial_runs([store]), objective="val_loss", study="cnn-a")
    assert view["orderByKey"] == "metrics.`val_loss`" and view["orderByAsc"] is True
    assert view["searchFilter"] == "tags.`hemabench.role` = 'trial' and tags.`hemabench.study` = 'cnn-a'"
    columns = view["selectedColumns"]
    assert columns.index("metrics.`val_loss`") < columns.index("metrics.`val_accuracy`")
    assert {"params.`n_blocks`", "params.`backbone`", "tags.`hemabench.study`", "attributes.`Description`"} <= set(columns)
    assert view["columnOrder"] == columns


def test_installed_view_is_an_experiment_tag_the_ui_can_read(store: str) -> None:
    experiment_id, key = ui.prepare("board")
    again = ui.prepare("board")
    assert (experiment_id, key) == (store, again[1])  # same state, same key: re-running adds no tags
    tags = mlflow.get_experiment(store).tags
    value = tags[f"mlflow.sharedViewState.{key}"]
    assert value.startswith("deflate;")
    state = json.loads(zlib.decompress(base64.b64decode(value.removeprefix("deflate;"))))
    assert state["orderByKey"] == "metrics.`val_f1_macro`" and state["orderByAsc"] is False
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert ui.leaderboard_url("http://127.0.0.1:5000", experiment_id, key) == (
        f"http://127.0.0.1:5000/#/experiments/{store}/runs?viewStateShareKey={key}&workflowType=machine_learning")
