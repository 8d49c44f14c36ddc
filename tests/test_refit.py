"""Multi-fidelity search: trials on a fixed share of the training split (`subset`), and the final refit of the best
configuration at full budget (bench.search.finish), which competes with the trial on validation for champion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import children, tiny_config


def search(tmp_path: Path, capsys: pytest.CaptureFixture, **overrides):
    """A real tiny search (ensemble off, so the champion is the trial or its refit); its result, client and output."""
    from bench import search as bench_search
    from bench import tracking

    result = bench_search.run(tiny_config(tmp_path, **overrides))
    return result, tracking.client(), capsys.readouterr().out


def refits(c, parent: str) -> list:
    return c.search_runs([c.get_run(parent).info.experiment_id],
                         f"tags.mlflow.parentRunId = '{parent}' and tags.`hemabench.role` = 'refit'")


def registered_run(c, name: str) -> str:
    return c.get_model_version_by_alias(name, "champion").run_id


def test_a_subset_search_refits_the_best_trial_on_all_of_train_and_registers_the_better_on_validation(
        tracking: Path, capsys: pytest.CaptureFixture) -> None:
    result, c, out = search(tracking, capsys, trials=1, epochs=2, subset=0.5)
    n_train = int(c.get_run(result.parent_run_id).data.metrics["n_train"])
    [trial] = children(c, result.parent_run_id)
    assert trial.data.params["subset"] == "0.5" and trial.data.metrics["train_images"] == n_train // 2  # 8 of 16 a class
    assert "each trial trains on 50% of the training split (24 of 48 images, fixed for the study)" in out
    assert "best trial 0 (trained on 24 of 48 training images): val_f1_macro=" in out

    [refit] = refits(c, result.parent_run_id)
    best = result.best["run_id"]
    assert refit.data.tags["hemabench.refit_of"] == best and refit.data.tags["hemabench.state"] == "COMPLETE"
    assert refit.data.metrics["train_images"] == n_train and refit.data.params["epochs"] == "2"
    assert refit.data.metrics["epochs_run"] == 2 and "hemabench.model_uri" in refit.data.tags
    assert "test_f1_macro" in refit.data.metrics  # recorded for the reader, never used to choose
    parent = c.get_run(result.parent_run_id).data.tags
    assert parent["hemabench.refit_run_id"] == refit.info.run_id

    trial_val, refit_val = trial.data.metrics["val_f1_macro"], refit.data.metrics["val_f1_macro"]
    won = refit_val >= trial_val  # a tie goes to the refit
    label = f"refit of trial 0 at 2 epochs on all {n_train} training images"
    assert parent["hemabench.champion_fit"] == (label if won else "trial 0")
    assert registered_run(c, "tests-model") == (refit.info.run_id if won else best)
    assert f"champion fit: {parent['hemabench.champion_fit']}; registered tests-model v1" in out
    from bench.reporting import board

    assert list(board([trial.info.experiment_id])["run_id"]) == [best]  # the leaderboard lists trials only


def test_a_deadline_stopped_best_trial_is_refitted_after_the_deadline(tracking: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """KerasTuner, trials on a subset, stopped by a 1 s deadline before their 4th epoch: the refit trains all 4."""
    result, c, out = search(tracking, capsys, trials=3, epochs=4, timeout=1.0, subset=0.5, engine="keras-tuner",
                            tuner="random", register=False)
    [trial] = children(c, result.parent_run_id)
    assert trial.data.metrics["train_images"] == 24
    trained = int(trial.data.metrics["epochs_run"])
    assert trained < 4 and (f"refit: trial {result.best['trial']} trained {trained} of 4 epochs on 24 of 48 training "
                            "images; it trains again after the search's 1 s deadline, 4 epochs on all 48 training "
                            "images (refit=never skips this)") in out
    [refit] = refits(c, result.parent_run_id)
    assert refit.data.metrics["epochs_run"] == 4 and refit.data.metrics["train_images"] == 48


def board_row(trial: int, epochs_run: int, train_images: int) -> pd.Series:
    return pd.Series({"trial": trial, "run_id": "r", "epochs_run": epochs_run, "train_images": train_images})


@pytest.mark.parametrize(("refit", "epochs_run", "train_images", "note", "said"), [
    ("auto", 3, 48, "already full budget", "no refit: trial 4 already ran at full budget (3 epochs on all 48 training images)"),
    ("never", 1, 24, "refit off", ""),
])
def test_no_refit_when_the_best_trial_ran_at_full_budget_or_refit_is_never(
        tmp_path: Path, capsys: pytest.CaptureFixture, refit: str, epochs_run: int, train_images: int, note: str,
        said: str) -> None:
    from types import SimpleNamespace

    from bench.search.finish import refit as refit_of

    ctx = SimpleNamespace(config=tiny_config(tmp_path, epochs=3, refit=refit), dataset=SimpleNamespace(y_train=range(48)))
    assert refit_of(ctx, board_row(4, epochs_run, train_images)) == (None, note)
    assert capsys.readouterr().out.strip() == said


@pytest.mark.parametrize(("trial", "refit", "ensemble", "champion"), [
    (0.9, 0.8, None, "trial"), (0.9, 0.9, None, "refit"), (0.8, 0.9, 0.85, "refit"), (0.8, 0.9, 0.9, "refit"),
    (0.8, 0.9, 0.95, "ensemble"), (0.8, None, 0.85, "ensemble"),
])
def test_the_champion_is_the_best_fit_on_validation(trial: float, refit: float | None, ensemble: float | None,
                                                    champion: str) -> None:
    from bench.search.finish import Fit, choose

    fits = {name: Fit(name, name, "", value, name) if value is not None else None
            for name, value in (("trial", trial), ("refit", refit), ("ensemble", ensemble))}
    assert choose("val_f1_macro", fits["trial"], fits["refit"], fits["ensemble"]).label == champion
    lower = {name: Fit(f.label, f.run_id, "", 1 - f.val_value, name) if f else None for name, f in fits.items()}
    assert choose("val_loss", lower["trial"], lower["refit"], lower["ensemble"]).label == champion


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "nan"])
def test_a_bad_subset_is_one_line(value: str, capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    assert main(["search", "--subset", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: The 'subset' parameter must be a float in the range (0.0, 1.0]. Got {float(value)!r} instead."


def test_a_bad_refit_or_a_non_number_subset_is_one_line(capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    assert main(["search", "--subset", "half"]) == 2
    assert capsys.readouterr().err.strip() == "error: The 'subset' parameter must be of type float. Got 'half' instead."
    assert main(["search", "--refit", "always"]) == 2
    assert capsys.readouterr().err.strip() == "error: The 'refit' parameter must be one of auto, never. Got 'always' instead."


def test_the_subset_is_seeded_stratified_and_keeps_groups_whole() -> None:
    from bench.training.subset import subset_rows

    rng = np.random.default_rng(0)
    groups = np.repeat([f"smear{i}" for i in range(300)], 3)  # 300 groups of 3 images, one class each
    y = np.repeat(rng.integers(0, 4, 300), 3)
    kept = subset_rows(y, groups, 0.3, seed=7)
    assert (kept == subset_rows(y, groups, 0.3, seed=7)).all()
    assert not np.array_equal(kept, subset_rows(y, groups, 0.3, seed=8))
    whole = pd.Series(np.isin(np.arange(len(y)), kept)).groupby(groups).nunique()
    assert (whole == 1).all()  # a group is all in or all out
    share = np.bincount(y[kept], minlength=4) / np.bincount(y, minlength=4)
    assert np.allclose(share, 0.3, atol=0.01)
    assert len(np.unique(y[subset_rows(y, groups, 0.001, seed=0)])) == 4  # every class keeps one group


def test_refit_full_retrains_the_champion_on_train_and_validation_registers_it_and_is_reused_on_resume(
        tracking: Path, capsys: pytest.CaptureFixture) -> None:
    """Ensemble on: the champion is whichever fit won on validation (the best trial, or the ensemble of the two);
    each of its fits trains again on train + validation, stopped after the epoch that fit kept."""
    result, c, out = search(tracking, capsys, trials=2, epochs=3, ensemble=True, refit_full=True)
    parent = c.get_run(result.parent_run_id)
    [full] = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}' and "
                                                         "tags.`hemabench.role` = 'refit_full'")
    chosen = c.get_run(full.data.tags["hemabench.refit_full_of"])
    assert full.info.status == "FINISHED" and parent.data.tags["hemabench.refit_full_run_id"] == full.info.run_id
    assert full.data.metrics["train_images"] == parent.data.metrics["n_train"] + parent.data.metrics["n_val"]

    members = json.loads(full.data.tags["hemabench.members"])
    if chosen.data.tags["hemabench.role"] == "ensemble":
        assert [(m["run_id"], m["weight"]) for m in members] == [
            (m["run_id"], m["weight"]) for m in json.loads(chosen.data.tags["hemabench.members"])]
    else:
        assert [(m["run_id"], m["weight"]) for m in members] == [(chosen.info.run_id, 1.0)]
    kept = [int(c.get_run(m["run_id"]).data.metrics["best_epoch"]) for m in members]
    assert full.data.params["epochs_kept"] == ",".join(map(str, kept))  # each stops after the epoch its fit kept

    label = parent.data.tags["hemabench.champion_fit"]
    assert label.endswith(", retrained on train + validation")
    version = c.get_model_version_by_alias("tests-model", "champion")
    assert version.run_id == full.info.run_id and version.tags["hemabench.refit_full_of"] == chosen.info.run_id
    estimate = chosen.data.metrics["val_f1_macro"]  # no validation score of its own: the chosen fit's is the estimate
    assert float(version.tags["val_f1_macro"]) == pytest.approx(estimate)
    assert full.data.metrics["estimate_val_f1_macro"] == pytest.approx(estimate)
    assert "test_accuracy" in full.data.metrics and "val_f1_macro" not in full.data.metrics
    assert f"refit_full: {label.removesuffix(', retrained on train + validation')} trains again on all " in out
    assert f"{label}: val_f1_macro={estimate:.4f}" in out and "(validation: the estimate of the fit it retrains" in out

    again, _, out = search(tracking, capsys, trials=2, epochs=3, ensemble=True, refit_full=True)  # resumed: no new trial
    assert "the champion's earlier refit_full run " + full.info.run_id + " is reused" in out
    assert len(c.search_runs([parent.info.experiment_id], "tags.`hemabench.role` = 'refit_full'")) == 1
    assert [v.version for v in c.search_model_versions("name='tests-model'")] == [version.version]


def test_stop_after_trains_the_schedule_up_to_that_epoch_and_keeps_it_unscored() -> None:
    import math

    from bench.data import load_dataset
    from bench.search.space import defaults, load_space
    from bench.training import fit_and_score

    ds = load_dataset("synthetic?n_per_class=10", image_size=32)
    fit = fit_and_score(defaults(load_space("scratch_cnn")), ds, family="scratch_cnn", epochs=4, seed=0, stop_after=2)
    assert (len(fit.history), fit.best_epoch, fit.stopped) == (2, 2, "stop_after")
    assert fit.val_prob.shape == (0, len(ds.class_names)) and math.isnan(fit.best_value)
    assert set(fit.history[0]) == {"loss", "accuracy"}  # nothing scored on validation
