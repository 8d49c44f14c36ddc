"""The benchmark end to end on tiny data: the table's rows and columns, the MLflow runs, the report, the registry."""

from __future__ import annotations

import io
import os
import re

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench import benchmark
from bench.benchmark import contenders as contender_registry
from bench.benchmark import runner
from bench import paths
from bench.errors import ConfigError
from bench.search import load_space
from tests.conftest import TINY_DATA, store_uri

METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro")
CSV_COLUMNS = {"contender", "kind", "seed", "val_f1_macro", "val_test_gap_f1", "test_ece", "train_seconds", "wall_seconds",
               "cpu_seconds", "epochs", "images", "trials", "n_params", "run_id", "model_uri"} | {
               f"test_{m}{s}" for m in METRICS for s in ("", "_low", "_high")}
SUMMARY_COLUMNS = {"diff_f1_macro", "diff_f1_macro_low", "diff_f1_macro_high", "p_f1_macro", "diff_accuracy",
                   "p_accuracy", "p_mcnemar", "mean_rank", "verdict", "test_f1_macro_seed_low", "median_seed"}
MD_HEADER = ["Contender", "Kind", "Seeds", "Accuracy", "Precision (macro)", "Recall (macro)", "F1 (macro)",
             "AUC-ROC (macro OvR)", "Val F1", "Val-test gap", "ECE", "Epochs", "Images", "CPU s", "Wall s", "Trials",
             "Params", "ΔF1 vs winner", "ΔAccuracy vs winner", "McNemar p", "Mean rank", "Epochs to best reference",
             "Verdict"]
SEARCHES = ["optuna_random_scratch", "kt_hyperband_scratch"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """null + the Keras Sequential reference + two searches (one per engine) at a 2-epoch budget (1 epoch a
    trial), 2 seeds, 32 px, registering the winner."""
    root = tmp_path_factory.mktemp("benchmark")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", store_uri(root))
        patch.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        config = benchmark.make_benchmark_config(
            data=TINY_DATA, image_size="32", epochs="1", budget="2", repeats="2",
            contenders=",".join(["null_model", "keras_sequential_cnn", *SEARCHES]), experiment="tests",
            registered_model="tests-bench", register="true", storage=str(root / "optuna.journal"), n_bootstrap="200")
        result = benchmark.run(config)
        yield config, result.runs, MlflowClient(), result
        mlflow.set_tracking_uri(None)


def parent_of(c: MlflowClient, table: pd.DataFrame) -> str:
    return c.get_run(table["run_id"].iloc[0]).data.tags["mlflow.parentRunId"]


def test_table_has_a_row_per_contender_and_seed_with_every_column_and_ordered_intervals(finished) -> None:
    _, table, _, _ = finished
    assert list(table["contender"]) == ["null_model"] + [n for n in ["keras_sequential_cnn", *SEARCHES] for _ in (0, 1)]
    assert list(table["seed"]) == [0] + [0, 1] * 3
    assert CSV_COLUMNS <= set(table.columns)
    for m in METRICS:
        assert (table[f"test_{m}_low"] <= table[f"test_{m}_high"]).all()
        assert table[f"test_{m}"].between(0, 1).all()
    null = table.iloc[0]
    assert null["test_roc_auc_macro"] == pytest.approx(0.5)  # a constant prior ranks nothing
    assert (table.loc[1:, "n_params"] > 1000).all()
    assert table["val_test_gap_f1"].tolist() == pytest.approx((table["val_f1_macro"] - table["test_f1_macro"]).tolist())


def test_parent_run_holds_the_table_the_report_and_per_contender_metrics(finished) -> None:
    _, table, c, _ = finished
    parent = parent_of(c, table)
    run = c.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["hemabench.role"] == "benchmark"
    splits = run.data.tags["hemabench.splits_fingerprint"]  # what every row was scored on, not just which files
    assert splits and all(c.get_run(r).data.tags["hemabench.splits_fingerprint"] == splits for r in table["run_id"])
    artifacts = {a.path for a in c.list_artifacts(parent)}
    assert {"benchmark.md", "benchmark.csv", "benchmark_summary.csv", "benchmark_report.html", "search_race.csv"} <= artifacts
    text = mlflow.artifacts.load_text(f"runs:/{parent}/benchmark.md")
    assert text.startswith("Measured ") and run.data.tags["hemabench.machine"] in text.splitlines()[0]
    md = [line for line in text.splitlines() if line.startswith("|")]
    assert [cell.strip() for cell in md[0].strip("|").split("|")] == MD_HEADER
    assert len(md) == 2 + 4
    assert re.search(r"\| keras_sequential_cnn \| reference \| 2 \| \d\.\d{3} \[-?\d\.\d{3}, \d\.\d{3}\]; test "
                     r"\[\d\.\d{3}, \d\.\d{3}\] \|", md[3])
    csv = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{parent}/benchmark.csv")))
    assert list(csv["contender"]) == list(table["contender"]) and list(csv["seed"]) == list(table["seed"])
    for name in set(table["contender"]):
        assert {f"{name}.test_f1_macro", f"{name}.test_f1_macro_low", f"{name}.test_ece"} <= set(run.data.metrics)
    html = mlflow.artifacts.load_text(f"runs:/{parent}/benchmark_report.html")
    for title in ("Search race", "confusion matrices", "ROC curves", "Reliability diagram"):
        assert title in html


def test_every_contender_is_a_finished_child_run_and_models_are_logged(finished) -> None:
    _, table, c, _ = finished
    parent = parent_of(c, table)
    for _, row in table.iterrows():
        run = c.get_run(row["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["hemabench.contender"] == row["contender"]
        assert run.info.status == "FINISHED"
        assert "test_f1_macro" in run.data.metrics
    assert pd.isna(table.iloc[0]["model_uri"]) or table.iloc[0]["model_uri"] == ""
    for uri in table["model_uri"].iloc[1:]:
        assert uri.startswith("models:/")
    race = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{parent}/search_race.csv")))
    assert set(race["contender"]) == set(SEARCHES) and set(race["seed"]) == {0, 1}
    assert (race["seconds"] > 0).all()
    spent = table[table["kind"] == "search"].set_index(["contender", "seed"])["epochs"].sort_index()
    assert race.groupby(["contender", "seed"])["epochs"].max().sort_index().tolist() == spent.tolist()


def test_search_contenders_spend_the_same_epochs_budget_within_one_trial(finished) -> None:
    config, table, _, _ = finished
    searches = table[table["kind"] == "search"]
    assert searches["epochs"].between(config.budget, config.budget + config.epochs - 1).all()
    assert (table.loc[1:, "images"] / table.loc[1:, "epochs"]).nunique() == 1  # every epoch sees the training split
    assert (table.loc[1:, "cpu_seconds"] > 0).all() and (table.loc[1:, "wall_seconds"] > 0).all()


def test_summary_has_seed_intervals_paired_tests_ranks_and_a_verdict(finished) -> None:
    _, _, _, result = finished
    summary = result.summary.set_index("contender")
    assert SUMMARY_COLUMNS <= set(summary.columns)
    assert summary.loc[result.winner, "verdict"].startswith("winner")
    others = summary.drop(index=result.winner)
    assert others["p_mcnemar"].between(0, 1).all() and others["p_f1_macro"].between(0, 1).all()
    assert (others["diff_f1_macro_low"] <= others["diff_f1_macro_high"]).all()
    assert summary["mean_rank"].notna().all()  # every contender scored on both seeds (null: once, deterministic)
    assert f"Winner on validation: {result.winner}." in result.markdown


def test_winner_on_validation_is_registered(finished) -> None:
    config, table, c, result = finished
    summary = result.summary[result.summary["kind"] != "null"]
    assert result.winner == summary.sort_values("val_value", ascending=False).iloc[0]["contender"]
    version = c.get_model_version_by_alias(config.registered_model, "champion")
    assert c.get_run(parent_of(c, table)).data.tags["hemabench.winner"] == result.winner
    runs = table[table["contender"] == result.winner].sort_values("val_value", ascending=False)
    assert float(version.tags["test_f1_macro"]) == pytest.approx(runs.iloc[0]["test_f1_macro"], abs=1e-5)


def test_every_reference_setup_is_fully_fixed() -> None:
    refs = sorted((paths.SEARCH_SPACES_DIR / contender_registry.REFERENCE_DIR).glob("*.yaml"))
    assert {"keras_sequential_cnn", "four_block_cnn_sgd"} <= {p.stem for p in refs}
    for path in refs:
        space = load_space(str(path))
        assert all(p.type == "fixed" for p in space.params), path.name
        assert space.name == path.stem


def test_contender_registry_names_are_unique_and_the_default_set_has_every_kind() -> None:
    names = [c.name for c in benchmark.list_contenders()]
    assert len(names) == len(set(names))
    assert {c.kind for c in benchmark.select("default")} == set(runner.KINDS)
    assert [c.name for c in benchmark.select("null_model, null_model,keras_sequential_cnn")] == ["null_model", "keras_sequential_cnn"]


@pytest.mark.parametrize("values, message", [
    ({"contenders": "null_model,nope"}, "unknown contender 'nope'; available: default, all, null_model"),
    ({"budget": "2.5"}, "The 'budget' parameter must be a whole number of epochs or trials"),
    ({"budget_unit": "hours"}, "The 'budget_unit' parameter must be one of trials, epochs, seconds"),
    ({"repeats": "0"}, "The 'repeats' parameter must be an integer >= 1"),
    ({"image_size": "8"}, "The 'image_size' parameter must be 0 (the dataset card's) or an integer in [16, 1024]"),
    ({"epochs": "two"}, "The 'epochs' parameter must be of type int. Got 'two' instead."),
    ({"colour": "red"}, "unknown parameter 'colour'"),
    ({"weights": "mobilenet_v2=,resnet50=imagenet"}, "The 'weights' parameter must be none, imagenet, a path, or backbone=value"),
])
def test_bad_parameters_are_one_line_errors_before_any_work(values, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        benchmark.make_benchmark_config(**values)


def test_every_mlproject_benchmark_parameter_reaches_the_command_and_the_config() -> None:
    entry = yaml.safe_load((paths.PROJECT_ROOT / "MLproject").read_text())["entry_points"]["benchmark"]
    fields = set(benchmark.BenchmarkConfig.__dataclass_fields__)
    assert set(entry["parameters"]) == fields
    for name in entry["parameters"]:
        assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"], name
    defaults = {k: v["default"] for k, v in entry["parameters"].items()}
    assert benchmark.make_benchmark_config(**{k: str(v) for k, v in defaults.items()}) == benchmark.BenchmarkConfig()


def test_image_size_0_is_the_dataset_cards_else_the_shrunk_32_px(tmp_path) -> None:
    card = tmp_path / "cells.yaml"
    card.write_text("name: cells\nroot: .\nlayout: class_folders\nimage_size: 48\n")
    assert benchmark.make_benchmark_config(data=str(card)).image_size == 48
    assert benchmark.make_benchmark_config(data=str(card), image_size="40").image_size == 40
    assert benchmark.make_benchmark_config().image_size == 32  # the synthetic default has no card


def test_weights_apply_to_every_backbone_or_per_backbone() -> None:
    assert benchmark.weights_for("imagenet", "resnet50") == "imagenet"
    per = "mobilenet_v2=/w/mobilenet.h5, resnet50=imagenet"
    assert benchmark.weights_for(per, "mobilenet_v2") == "/w/mobilenet.h5"
    assert benchmark.weights_for(per, "resnet50") == "imagenet"
    assert benchmark.weights_for(per, "efficientnet_b0") == "none"  # not listed: random initialisation
    config = benchmark.make_benchmark_config(budget_unit="seconds", budget="30", contenders="null_model,optuna_tpe_scratch")
    assert config.budget == 30.0


def test_under_mlflow_run_the_benchmark_adopts_the_run_and_its_logged_string_params(tracking, monkeypatch) -> None:
    c = MlflowClient()
    experiment = c.create_experiment("projects")
    run_id = c.create_run(experiment).info.run_id
    for key, value in {"budget": "4", "register": "false", "storage": "''"}.items():  # how `mlflow run` logs them
        c.log_param(run_id, key, value)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    table = benchmark.run(benchmark.make_benchmark_config(data=TINY_DATA, image_size="32", contenders="null_model",
                                                          n_bootstrap="100")).runs
    assert c.get_run(table["run_id"].iloc[0]).data.tags["mlflow.parentRunId"] == run_id
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["budget"] == "4"
    assert "benchmark.md" in {a.path for a in c.list_artifacts(run_id)}


def test_every_budget_unit_is_accepted_for_every_search_contender() -> None:
    for unit, budget in (("epochs", "12"), ("trials", "3"), ("seconds", "30.5")):
        config = benchmark.make_benchmark_config(budget_unit=unit, budget=budget, contenders=",".join(SEARCHES))
        assert config.budget_unit == unit


def test_backbone_contenders_without_real_weights_are_left_out_with_one_line(tmp_path, capsys) -> None:
    chosen = benchmark.select("null_model,mobilenet_v2_frozen,keras_sequential_cnn")
    kept = runner.with_real_weights(chosen, "none")
    assert [c.name for c in kept] == ["null_model", "keras_sequential_cnn"]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "mobilenet_v2_frozen (mobilenet_v2: none)" in out[0]
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"x")
    assert [c.name for c in runner.with_real_weights(chosen, f"mobilenet_v2={weights}")] == [c.name for c in chosen]


def test_exit_2_with_one_line_when_every_contender_but_the_null_model_fails(tracking, capsys) -> None:
    from bench.cli import main

    missing = tracking / "missing.h5"
    missing.write_bytes(b"not weights")  # a file, so the backbone is not left out, but no Keras can read it
    code = main(["benchmark", "--data", TINY_DATA, "--image-size", "32", "--epochs", "1", "--repeats", "1",
                 "--contenders", "null_model,mobilenet_v2_frozen", "--weights", str(missing), "--n-bootstrap", "100"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]  # MLflow logs there too
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith("error: every contender but the null model failed: mobilenet_v2_frozen")
