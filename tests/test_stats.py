"""Expected calibration error on cases with known answers (the bootstrap is tested in test_bootstrap.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.metrics import expected_calibration_error


def outcomes(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-class labels (all 0) and probabilities that are right exactly where `correct` is True."""
    y = np.zeros(len(correct), dtype=int)
    prob = np.where(correct[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
    return y, prob


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
