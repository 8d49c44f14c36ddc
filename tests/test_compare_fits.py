"""benchmarks/compare_fits.py: the groups every fit loses, and the mean of fits, from `recipe_kaggle.py --save` files."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.compare_fits import compare, load, main

CLASSES = np.asarray(["EOSINOPHIL", "NEUTROPHIL"])
Y_VAL = np.asarray([0, 0, 1, 1])
Y_TEST = np.asarray([0, 0, 0, 1, 1, 1])
GROUPS = np.asarray(["e1", "e1", "e2", "n1", "n1", "n2"])


def fit(*, val: list[int], test: list[int], carve: str = "carve0", y_test: np.ndarray = Y_TEST) -> dict:
    return {"val": np.eye(2, dtype=np.float32)[val], "test": np.eye(2, dtype=np.float32)[test], "y_val": Y_VAL,
            "y_test": y_test, "groups_test": GROUPS, "classes": CLASSES, "splits_fingerprint": np.asarray(carve)}


def test_lists_each_group_some_fit_loses_with_every_fits_accuracy():
    # fit a loses group e2 (one image); fit b loses one of n1's two images; both get e1 and n2 right
    scores, lost = compare({"a": fit(val=[0, 0, 1, 1], test=[0, 0, 1, 1, 1, 1]),
                            "b": fit(val=[0, 1, 1, 1], test=[0, 0, 0, 1, 0, 1])})
    assert list(lost.index) == [("EOSINOPHIL", "e2"), ("NEUTROPHIL", "n1")]
    assert lost.loc[("EOSINOPHIL", "e2"), ["images", "a", "b"]].tolist() == [1, 0.0, 1.0]
    assert lost.loc[("NEUTROPHIL", "n1"), ["a", "b"]].tolist() == [1.0, 0.5]
    assert lost.loc[("EOSINOPHIL", "e2"), "mostly called by a"] == "NEUTROPHIL"
    assert lost.loc[("EOSINOPHIL", "e2"), "points (first fit)"] == pytest.approx(100 / 6)
    assert scores.set_index("fit").loc["a", "test accuracy"] == pytest.approx(5 / 6)


def test_the_mean_has_a_validation_score_only_when_every_fit_used_one_carve():
    a = fit(val=[0, 0, 1, 1], test=[0, 0, 1, 1, 1, 1])
    same = fit(val=[0, 0, 1, 1], test=[0, 0, 0, 1, 1, 1])
    other = fit(val=[0, 0, 1, 1], test=[0, 0, 0, 1, 1, 1], carve="carve1")
    mean = lambda fits: compare(fits)[0].set_index("fit").loc["mean of all", "val F1 (macro)"]  # noqa: E731
    assert mean({"a": a, "same": same}) == pytest.approx(1.0)
    assert np.isnan(mean({"a": a, "other": other}))


def test_fits_scored_on_other_test_images_are_refused_in_one_line():
    a = fit(val=[0, 0, 1, 1], test=[0, 0, 1, 1, 1, 1])
    b = fit(val=[0, 0, 1, 1], test=[0, 0, 1, 1, 1, 1], y_test=np.asarray([0, 0, 0, 1, 1, 0]))
    with pytest.raises(SystemExit, match="^error: b was scored on other test images than the first fit$"):
        compare({"a": a, "b": b})


def test_reads_the_files_recipe_kaggle_saves_and_prints_both_tables(tmp_path, capsys):
    for name, test in (("a", [0, 0, 1, 1, 1, 1]), ("b", [0, 0, 0, 1, 1, 1])):
        np.savez_compressed(tmp_path / f"{name}.npz", **fit(val=[0, 0, 1, 1], test=test), best_epoch=1, seconds=1.0)
    assert load(f"named={tmp_path / 'a.npz'}")[0] == "named"
    assert main([f"a={tmp_path / 'a.npz'}", f"b={tmp_path / 'b.npz'}"]) == 0
    out = capsys.readouterr().out
    assert "mean of all" in out and "e2" in out
