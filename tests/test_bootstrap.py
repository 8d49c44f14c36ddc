"""Stratified (group) bootstrap intervals, paired comparisons, McNemar, mean ranks and seed intervals on cases
with known answers, and a coverage simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm
from statsmodels.stats.contingency_tables import mcnemar

from bench.errors import ConfigError
from bench.metrics.bootstrap import (TABLE_METRICS, Interval, McNemar, PairedDifference, bootstrap_intervals,
                       mcnemar_exact, mean_ranks, paired_bootstrap, resample_counts, resample_indices, seed_interval)

ACCURACY = {"accuracy": TABLE_METRICS["accuracy"]}


def outcomes(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-class labels (all 0) and probabilities that are right exactly where `correct` is True."""
    y = np.zeros(len(correct), dtype=int)
    prob = np.where(correct[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
    return y, prob


def four_classes_one_with_four_groups() -> tuple[np.ndarray, np.ndarray]:
    """Labels and groups: classes 0-2 with 30 groups of 1-6 images each, class 3 with only 4 groups."""
    rng = np.random.default_rng(5)
    group_class = np.repeat([0, 1, 2, 3], [30, 30, 30, 4])
    groups = np.repeat(np.arange(len(group_class)), rng.integers(1, 7, len(group_class)))
    return group_class[groups], groups


# --- stratification -----------------------------------------------------------------------------------------


def test_no_image_resample_drops_a_class_and_each_keeps_the_class_counts() -> None:
    y = np.repeat([0, 1, 2, 3], [300, 200, 100, 4])
    counts = resample_counts(len(y), y=y, n_resamples=2000, seed=3)
    per_class = np.stack([counts[:, y == c].sum(axis=1) for c in range(4)], axis=1)
    assert (per_class == [300, 200, 100, 4]).all()


def test_no_group_resample_drops_a_class_and_each_keeps_the_groups_per_class() -> None:
    y, groups = four_classes_one_with_four_groups()
    first = np.unique(groups, return_index=True)[1]  # a group's first image stands for the group
    for idx in resample_indices(len(y), y=y, groups=groups, n_resamples=2000, seed=3):
        assert set(np.unique(y[idx])) == {0, 1, 2, 3}
        drawn_groups = np.isin(idx, first)
        assert np.bincount(y[idx][drawn_groups], minlength=4).tolist() == [30, 30, 30, 4]


def test_a_mixed_group_is_resampled_in_the_stratum_of_its_majority_class() -> None:
    y = np.array([0, 0, 1, 1, 1, 1])
    groups = np.array(["m", "m", "m", "b", "c", "d"])  # "m": two images of class 0, one of class 1
    for idx in resample_indices(6, y=y, groups=groups, n_resamples=200, seed=0):
        assert np.bincount(idx, minlength=6)[:3].tolist() == [1, 1, 1]  # alone in stratum 0: always drawn once


def test_without_labels_resampling_is_one_stratum() -> None:
    counts = resample_counts(40, n_resamples=500, seed=0)
    assert (counts.sum(axis=1) == 40).all()
    assert (counts == 0).any(axis=1).all()  # iid draws leave images out


# --- coverage ---------------------------------------------------------------------------------------------


def simulated_split(rng: np.random.Generator, groups_per_class: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four classes with `groups_per_class` groups of 10-39 images; a group's accuracy is Beta-distributed
    around its class's mean (0.95, 0.90, 0.85, 0.80; concentration 10), so the true accuracy is 0.875."""
    means = np.array([0.95, 0.90, 0.85, 0.80])
    group_class = np.repeat(np.arange(4), groups_per_class)
    group_accuracy = rng.beta(means[group_class] * 10, (1 - means[group_class]) * 10)
    groups = np.repeat(np.arange(len(group_class)), rng.integers(10, 40, len(group_class)))
    y = group_class[groups]
    right = rng.random(len(y)) < group_accuracy[groups]
    return y, np.eye(4)[np.where(right, y, (y + 1) % 4)], groups


def test_group_interval_covers_the_true_accuracy_95_percent_of_the_time() -> None:
    # 17 groups per class as in the Kaggle blood-cell test split (68 groups); 400 splits, 300 resamples each.
    rng, covered = np.random.default_rng(2024), 0
    for sim in range(400):
        y, prob, groups = simulated_split(rng, groups_per_class=17)
        interval = bootstrap_intervals(y, prob, groups=groups, metrics=ACCURACY, n_resamples=300, seed=sim)
        covered += interval["accuracy"].low <= 0.875 <= interval["accuracy"].high
    assert 0.93 <= covered / 400 <= 0.97


# --- paired comparison and McNemar ------------------------------------------------------------------------


def test_identical_predictions_differ_by_zero_with_p_one() -> None:
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 3, 120), rng.integers(0, 3, 120)
    for name, diff in paired_bootstrap(y, pred, pred, groups=np.arange(120) // 4, n_resamples=300).items():
        assert diff == PairedDifference(name, 0.0, 0.0, 0.0, 1.0)


def test_a_clearly_better_classifier_has_an_interval_above_zero_and_a_small_p() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 400)
    good = np.where(rng.random(400) < 0.9, y, (y + 1) % 4)
    bad = np.where(rng.random(400) < 0.6, y, (y + 2) % 4)
    result = paired_bootstrap(y, good, bad, n_resamples=500)
    assert set(result) == {"f1_macro", "accuracy"}
    assert result["accuracy"].difference == pytest.approx(np.mean(good == y) - np.mean(bad == y))
    for diff in result.values():
        assert 0 < diff.low < diff.difference < diff.high
        assert diff.p_value < 0.01
    swapped = paired_bootstrap(y, bad, good, n_resamples=500)["accuracy"]
    accuracy = result["accuracy"]  # same resamples, so swapping a and b mirrors the difference and its interval
    assert (swapped.difference, swapped.low, swapped.high) == pytest.approx((-accuracy.difference, -accuracy.high,
                                                                             -accuracy.low))


def test_paired_p_value_is_below_five_percent_exactly_when_the_interval_excludes_zero() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    for flip in (0.0, 0.02, 0.04, 0.06, 0.1):  # b is a with a growing share of extra mistakes
        a = np.where(rng.random(300) < 0.8, y, 1 - y)
        b = np.where(rng.random(300) < flip, 1 - y, a)
        diff = paired_bootstrap(y, a, b, n_resamples=400, metrics=("accuracy",))["accuracy"]
        assert (diff.p_value < 0.05) == (diff.low > 0 or diff.high < 0), (flip, diff)


def test_paired_bootstrap_accepts_probabilities_and_compares_auc() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 200)
    sharp = np.eye(3)[y] + rng.random((200, 3))
    diff = paired_bootstrap(y, sharp, rng.random((200, 3)), metrics=("roc_auc_macro",), n_resamples=200)
    assert diff["roc_auc_macro"].low > 0.2


@pytest.mark.parametrize("b, c, expected", [(10, 0, 2 * 0.5**10), (0, 10, 2 * 0.5**10), (7, 7, 1.0),
                                            (3, 12, None), (0, 0, 1.0)])
def test_mcnemar_exact_on_known_tables_matches_statsmodels(b: int, c: int, expected: float | None) -> None:
    both_right, both_wrong = 20, 5
    right_a = np.repeat([True, True, False, False], [both_right, b, c, both_wrong])
    right_b = np.repeat([True, False, True, False], [both_right, b, c, both_wrong])
    y = np.zeros(len(right_a), dtype=int)
    result = mcnemar_exact(y, np.where(right_a, 0, 1), np.where(right_b, 0, 2))
    reference = mcnemar([[both_right, b], [c, both_wrong]], exact=True).pvalue
    assert result == McNemar(b, c, pytest.approx(reference))
    if expected is not None:
        assert result.p_value == pytest.approx(expected)


# --- seeds ------------------------------------------------------------------------------------------------


def test_mean_ranks_average_per_seed_ranks_with_ties_shared() -> None:
    scores = {"a": [0.9, 0.8, 0.7], "b": [0.8, 0.8, 0.9], "c": [0.1, 0.2, 0.3]}
    expected = {"a": (1 + 1.5 + 2) / 3, "b": (2 + 1.5 + 1) / 3, "c": 3.0}
    assert mean_ranks(scores) == pytest.approx(expected)
    assert mean_ranks(pd.DataFrame(scores)) == pytest.approx(expected)  # a column per contender, a row per seed


def test_mean_ranks_refuse_contenders_with_different_numbers_of_seeds() -> None:
    with pytest.raises(ConfigError, match="one score per seed"):
        mean_ranks({"a": [0.9, 0.8], "b": [0.8]})


def test_seed_interval_is_the_t_interval_of_the_mean() -> None:
    interval = seed_interval([0.80, 0.82, 0.84])
    half = stats.t.ppf(0.975, 2) * 0.02 / np.sqrt(3)  # sd 0.02
    assert (interval.value, interval.low, interval.high) == pytest.approx((0.82, 0.82 - half, 0.82 + half))


def test_one_seed_has_a_mean_and_no_interval() -> None:
    interval = seed_interval([0.9])
    assert isinstance(interval, Interval)
    assert interval.value == 0.9 and np.isnan(interval.low) and np.isnan(interval.high)


# --- the tests of bench/stats.py, adapted for `y` ---------------------------------------------------------


def test_accuracy_interval_matches_the_normal_approximation_for_bernoulli_outcomes() -> None:
    n, p = 400, 0.8
    y, prob = outcomes(np.arange(n) < p * n)
    interval = bootstrap_intervals(y, prob, metrics=ACCURACY, n_resamples=4000)["accuracy"]
    half = 1.96 * np.sqrt(p * (1 - p) / n)  # 0.039
    assert interval.value == pytest.approx(p)
    assert interval.low == pytest.approx(p - half, abs=0.008)
    assert interval.high == pytest.approx(p + half, abs=0.008)


def test_perfect_predictions_give_a_degenerate_interval() -> None:
    y, prob = outcomes(np.ones(50, dtype=bool))
    interval = bootstrap_intervals(y, prob, metrics=ACCURACY, n_resamples=200)["accuracy"]
    assert (interval.value, interval.low, interval.high) == (1.0, 1.0, 1.0)


def test_group_resampling_keeps_every_drawn_group_whole() -> None:
    groups = np.repeat(np.array(["a", "b", "c", "d", "e"]), [1, 2, 3, 4, 5])
    np.random.default_rng(0).shuffle(groups)
    y = (groups > "b").astype(int)  # two strata: {a, b} and {c, d, e}
    for idx in resample_indices(len(groups), y=y, groups=groups, n_resamples=50, seed=1):
        drawn = groups[idx]
        for g in np.unique(drawn):
            size = int((groups == g).sum())
            assert (drawn == g).sum() % size == 0  # only whole copies of a group
            assert np.bincount(idx[drawn == g]).max() == (drawn == g).sum() // size  # each member as often as its group


def test_iid_resampling_draws_as_many_images_as_there_are() -> None:
    assert all(len(idx) == 30 for idx in resample_indices(30, n_resamples=20))
    assert all(len(idx) == 30 for idx in resample_indices(30, y=np.arange(30) % 3, n_resamples=20))


def test_group_interval_is_wider_than_iid_when_outcomes_are_correlated_within_groups() -> None:
    # 40 groups of 10 images; a group is right or wrong as a whole (one patient's cells look alike).
    group_correct = np.arange(40) % 5 != 0  # 80% of groups right
    groups = np.repeat(np.arange(40), 10)
    y, prob = outcomes(group_correct[groups])
    iid = bootstrap_intervals(y, prob, metrics=ACCURACY, n_resamples=2000)["accuracy"]
    grouped = bootstrap_intervals(y, prob, groups=groups, metrics=ACCURACY, n_resamples=2000)["accuracy"]
    assert iid.value == grouped.value == pytest.approx(0.8)
    # Effective sample size is 40 groups, not 400 images: about sqrt(10) ~ 3.2 times wider.
    assert (grouped.high - grouped.low) > 2.5 * (iid.high - iid.low)


def test_table_metrics_equal_scikit_learn_including_ties_and_an_absent_class() -> None:
    from bench.metrics import classification
    rng = np.random.default_rng(3)
    y = rng.choice([0, 1, 2, 4], 300)  # class 3 absent from the labels
    prob = np.round(rng.dirichlet(np.ones(5), 300), 1) + 1e-3  # rounding makes many tied scores
    prob /= prob.sum(axis=1, keepdims=True)
    expected = classification.classification_metrics(y, prob, list("abcde"), prefix="t", per_class=False)
    for name, metric in TABLE_METRICS.items():
        assert metric(y, prob.argmax(axis=1), prob) == pytest.approx(expected[f"t_{name}"], abs=1e-12), name
    two = np.column_stack([1 - prob[:, 0], prob[:, 0]])
    binary = (y == 0).astype(int)
    assert TABLE_METRICS["roc_auc_macro"](binary, two.argmax(axis=1), two) == pytest.approx(skm.roc_auc_score(binary, two[:, 1]))


def test_every_interval_brackets_its_resamples_and_uses_one_set_of_resamples() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    prob = rng.dirichlet(np.ones(4), 200)
    prob[np.arange(200), y] += 0.5
    prob /= prob.sum(axis=1, keepdims=True)
    a = bootstrap_intervals(y, prob, n_resamples=300, seed=7)
    b = bootstrap_intervals(y, prob, n_resamples=300, seed=7)
    assert a == b  # seeded
    assert set(a) == set(TABLE_METRICS)
    for interval in a.values():
        assert interval.low <= interval.high


@pytest.mark.parametrize("kwargs, message", [
    ({"confidence": 1.5}, "'confidence' parameter must be between 0 and 1"),
    ({"n_resamples": 0}, "'n_resamples' parameter must be an integer >= 1"),
    ({"groups": np.zeros(3)}, "groups must have one entry per image (4); got 3"),
])
def test_bad_bootstrap_arguments_are_one_line_errors(kwargs, message) -> None:
    y, prob = outcomes(np.array([True, False, True, True]))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bootstrap_intervals(y, prob, **kwargs)


def test_group_losses_rank_sources_by_the_accuracy_points_they_cost() -> None:
    from bench.metrics import group_losses
    # 20 images: group "m" (class 1, 10 copies) all wrong as class 0; "a" (class 0, 6) half wrong; "b" (4) right.
    y = np.array([1] * 10 + [0] * 6 + [0] * 4)
    pred = np.array([0] * 10 + [0, 0, 0, 1, 1, 1] + [0] * 4)
    groups = np.array(["m"] * 10 + ["a"] * 6 + ["b"] * 4)
    table = group_losses(y, pred, groups, ["neg", "pos"])
    assert table["group"].tolist() == ["m", "a", "b"]
    assert table["points_lost"].tolist() == pytest.approx([0.5, 0.15, 0.0])
    assert table["points_lost"].sum() == pytest.approx(1 - (y == pred).mean())
    assert table.loc[0, ["class", "images", "accuracy", "most_predicted"]].tolist() == ["pos", 10, 0.0, "neg"]
