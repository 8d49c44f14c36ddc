"""Bootstrap intervals (iid and by group) and expected calibration error on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from bench.errors import ConfigError
from bench.metrics import classification_metrics, expected_calibration_error
from bench.metrics import TABLE_METRICS, bootstrap_intervals, resample_indices


def outcomes(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-class labels (all 0) and probabilities that are right exactly where `correct` is True."""
    y = np.zeros(len(correct), dtype=int)
    prob = np.where(correct[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
    return y, prob


def test_accuracy_interval_matches_the_normal_approximation_for_bernoulli_outcomes() -> None:
    n, p = 400, 0.8
    y, prob = outcomes(np.arange(n) < p * n)
    interval = bootstrap_intervals(y, prob, metrics={"accuracy": TABLE_METRICS["accuracy"]}, n_resamples=4000)["accuracy"]
    half = 1.96 * np.sqrt(p * (1 - p) / n)  # 0.039
    assert interval.value == pytest.approx(p)
    assert interval.low == pytest.approx(p - half, abs=0.008)
    assert interval.high == pytest.approx(p + half, abs=0.008)


def test_perfect_predictions_give_a_degenerate_interval() -> None:
    y, prob = outcomes(np.ones(50, dtype=bool))
    interval = bootstrap_intervals(y, prob, metrics={"accuracy": TABLE_METRICS["accuracy"]}, n_resamples=200)["accuracy"]
    assert (interval.value, interval.low, interval.high) == (1.0, 1.0, 1.0)


def test_group_resampling_keeps_every_drawn_group_whole() -> None:
    groups = np.repeat(np.array(["a", "b", "c", "d", "e"]), [1, 2, 3, 4, 5])
    np.random.default_rng(0).shuffle(groups)
    for idx in resample_indices(len(groups), groups=groups, n_resamples=50, seed=1):
        drawn = groups[idx]
        for g in np.unique(drawn):
            size = int((groups == g).sum())
            assert (drawn == g).sum() % size == 0  # only whole copies of a group
            assert np.bincount(idx[drawn == g]).max() == (drawn == g).sum() // size  # each member as often as its group


def test_iid_resampling_draws_as_many_images_as_there_are() -> None:
    assert all(len(idx) == 30 for idx in resample_indices(30, n_resamples=20))


def test_group_interval_is_wider_than_iid_when_outcomes_are_correlated_within_groups() -> None:
    # 40 groups of 10 images; a group is right or wrong as a whole (one patient's cells look alike).
    group_correct = np.arange(40) % 5 != 0  # 80% of groups right
    groups = np.repeat(np.arange(40), 10)
    y, prob = outcomes(group_correct[groups])
    metric = {"accuracy": TABLE_METRICS["accuracy"]}
    iid = bootstrap_intervals(y, prob, metrics=metric, n_resamples=2000)["accuracy"]
    grouped = bootstrap_intervals(y, prob, groups=groups, metrics=metric, n_resamples=2000)["accuracy"]
    assert iid.value == grouped.value == pytest.approx(0.8)
    # Effective sample size is 40 groups, not 400 images: about sqrt(10) ~ 3.2 times wider.
    assert (grouped.high - grouped.low) > 2.5 * (iid.high - iid.low)


def test_table_metrics_equal_scikit_learn_including_ties_and_an_absent_class() -> None:
    rng = np.random.default_rng(3)
    y = rng.choice([0, 1, 2, 4], 300)  # class 3 absent from the labels
    prob = np.round(rng.dirichlet(np.ones(5), 300), 1) + 1e-3  # rounding makes many tied scores
    prob /= prob.sum(axis=1, keepdims=True)
    expected = classification_metrics(y, prob, list("abcde"), prefix="t", per_class=False)
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


def test_ece_is_zero_for_calibrated_confidence_and_the_gap_for_overconfidence() -> None:
    y, prob = outcomes(np.arange(100) < 50)  # confidence 0.9 everywhere, accuracy 0.5
    assert expected_calibration_error(y, prob) == pytest.approx(0.4)
    y, prob = outcomes(np.arange(100) < 90)  # confidence 0.9, accuracy 0.9
    assert expected_calibration_error(y, prob) == pytest.approx(0.0, abs=1e-12)


def test_ece_weights_each_bin_by_its_share_of_images() -> None:
    # 60 images at confidence 1.0, all right (gap 0); 40 at confidence 0.7, 10 right (gap 0.45).
    y = np.zeros(100, dtype=int)
    prob = np.vstack([np.tile([1.0, 0.0], (60, 1)), np.tile([0.7, 0.3], (10, 1)), np.tile([0.3, 0.7], (30, 1))])
    assert expected_calibration_error(y, prob) == pytest.approx(0.4 * 0.45)
    assert expected_calibration_error(y, prob, n_bins=1) == pytest.approx(abs(0.7 - (0.6 + 0.4 * 0.7)))
