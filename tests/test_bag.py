"""`bag_folds`: the champion bagged over grouped folds of train + validation (bench.search.bag), registered with its
out-of-fold score; the folds themselves; the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_DATA, tiny_config


def bag_runs(c, experiment_id: str) -> list:
    return c.search_runs([experiment_id], "tags.`hemabench.role` = 'bag'")


def test_a_bagged_search_trains_the_champion_on_every_fold_and_registers_the_bag_with_its_out_of_fold_score(
        tracking: Path, capsys: pytest.CaptureFixture) -> None:
    from bench import search, tracking as bench_tracking

    config = tiny_config(tracking, trials=2, epochs=2, bag_folds=2, ensemble=True)  # the bag replaces an ensemble too
    result = search.run(config)
    out = capsys.readouterr().out
    c = bench_tracking.client()
    parent = c.get_run(result.parent_run_id)
    [bag] = bag_runs(c, parent.info.experiment_id)
    chosen = c.get_run(bag.data.tags["hemabench.bag_of"])
    assert bag.info.status == "FINISHED" and parent.data.tags["hemabench.bag_run_id"] == bag.info.run_id
    assert chosen.info.run_id == result.best["run_id"]  # the best trial's configuration is what is bagged
    n = int(parent.data.metrics["n_train"] + parent.data.metrics["n_val"])
    assert bag.data.metrics["train_images"] == n and bag.data.params["folds"] == "2"
    assert bag.data.params["trial"] == chosen.data.tags["hemabench.trial"]
    curve = c.get_metric_history(bag.info.run_id, "fold_val_f1_macro")
    assert [m.step for m in curve] == [1, 2]  # one value per fold, each on the images that fold left out
    assert len(bag.data.params["fold_best_epochs"].split(",")) == 2

    label = parent.data.tags["hemabench.champion_fit"]
    assert label == f"bag of 2 folds of trial {chosen.data.tags['hemabench.trial']}"
    version = c.get_model_version_by_alias("tests-model", "champion")
    oof = bag.data.metrics["oof_f1_macro"]
    assert version.run_id == bag.info.run_id and version.tags["hemabench.bag_of"] == chosen.info.run_id
    assert float(version.tags["val_f1_macro"]) == pytest.approx(oof)  # the bag's own score: out of fold
    assert "test_accuracy" in bag.data.metrics and "val_f1_macro" not in bag.data.metrics
    assert (f"bag: {label.removeprefix('bag of 2 folds of ')} trains 2 more times, on 2 folds of all {n:,} train + "
            "validation images") in out
    assert "bag: fold 1/2: val_f1_macro=" in out and "bag: fold 2/2: val_f1_macro=" in out
    assert f"bag: out-of-fold oof_f1_macro={oof:.4f} over all {n:,} train + validation images" in out
    assert f"{label}: val_f1_macro={oof:.4f}" in out and "(validation: out of fold, over train + validation" in out

    # The served bag is the mean of the fold fits: its test probabilities are one graph's, of the registered model.
    from bench.data import load_dataset
    from bench.search.ensemble import load_keras_model
    from bench.training import predict_proba

    model = load_keras_model(bag.data.tags["hemabench.model_uri"])
    assert len([layer for layer in model.layers if layer.name.startswith("member_")]) == 2
    ds = load_dataset(config.data, image_size=config.image_size, seed=config.seed)
    assert bag.data.metrics["test_accuracy"] == pytest.approx(
        float((predict_proba(model, ds.x_test).argmax(axis=1) == ds.y_test).mean()))

    again = search.run(config)  # resumed: nothing new to train, the bag is reused, no new version
    assert "the champion's earlier bag run " + bag.info.run_id + " is reused" in capsys.readouterr().out
    assert len(bag_runs(c, parent.info.experiment_id)) == 1 and again.parent_run_id == result.parent_run_id
    assert [v.version for v in c.search_model_versions("name='tests-model'")] == [version.version]


def test_pooled_rows_are_train_then_validation_with_their_files_as_groups(tracking: Path) -> None:
    from bench.data import load_dataset
    from bench.search.bag import pooled

    ds = load_dataset(TINY_DATA, image_size=32)
    y, groups = pooled(ds)
    assert np.array_equal(y, np.concatenate([ds.y_train, ds.y_val]))
    files = [f"file:{f}" for part in ("train", "val") for f in ds.splits["file"][ds.splits["split"] == part]]
    assert list(groups) == files  # no groups known: each file is its own


def test_folds_hold_out_every_row_once_keep_groups_whole_and_hold_out_every_class(tracking: Path) -> None:
    from dataclasses import replace

    from bench.data import load_dataset
    from bench.search.bag import folds, pooled

    ds = load_dataset(TINY_DATA, image_size=32)
    splits = ds.splits.copy()
    splits["group"] = np.where(splits["split"] != "test", "g" + (splits.index // 2).astype(str), "")  # pairs of images
    grouped = replace(ds, splits=splits)
    y, groups = pooled(grouped)
    cuts = folds(grouped, 3, seed=0)
    held = np.concatenate([h for _, h in cuts])
    assert sorted(held) == list(range(len(y)))  # every train + validation image is left out exactly once
    for train, out in cuts:
        assert not set(groups[train]) & set(groups[out])  # a group is never on both sides of a fold
        assert set(y[out]) == set(range(len(ds.class_names)))
    assert [list(h) for _, h in folds(grouped, 3, seed=0)] == [list(h) for _, h in cuts]  # seeded


def test_too_few_groups_for_the_folds_is_one_line_before_any_trial(tracking: Path, capsys: pytest.CaptureFixture) -> None:
    from bench import tracking as bench_tracking
    from bench.cli import main

    code = main(["search", "--data", TINY_DATA, "--image-size", "32", "--epochs", "1", "--trials", "1",
                 "--experiment", "tests", "--storage", str(tracking / "optuna.journal"), "--bag-folds", "9"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: bag_folds=9: class ") and err.endswith(
        "has 8 groups in train + validation, too few for 9 folds that each hold it out; lower bag_folds")
    assert "\n" not in err
    c = bench_tracking.client()
    assert not [run for e in c.search_experiments() for run in c.search_runs([e.experiment_id])]  # nothing ran


@pytest.mark.parametrize("args, message", [
    (["--bag-folds", "1"], "error: The 'bag_folds' parameter must be 0 (off) or an int >= 2. Got 1 instead."),
    (["--bag-folds", "3", "--refit-full", "true"],
     "error: refit_full and bag_folds both train the champion again on train + validation; set one of them "
     "(got refit_full=true, bag_folds=3)"),
])
def test_a_bad_bag_folds_is_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    assert main(["search", *args]) == 2
    assert capsys.readouterr().err.strip() == message
