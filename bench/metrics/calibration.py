"""Calibration: the one confidence binning, the reliability table drawn from it, and the expected calibration
error (ECE) computed on it."""

from __future__ import annotations

import numpy as np
import pandas as pd

N_BINS = 15


def reliability_bins(y_true: np.ndarray, prob: np.ndarray, n_bins: int = N_BINS) -> pd.DataFrame:
    """One row per equal-width bin of top-class confidence, (k/n, (k+1)/n] (Guo et al. 2017): `lower` edge,
    `count`, `accuracy` and mean `confidence` (NaN for empty bins)."""
    prob = np.asarray(prob)
    confidence = prob.max(axis=1) if len(prob) else np.zeros(0)
    correct = prob.argmax(axis=1) == np.asarray(y_true) if len(prob) else np.zeros(0, dtype=bool)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
    return pd.DataFrame({"lower": np.arange(n_bins) / n_bins, "count": count, "accuracy": accuracy,
                         "confidence": mean_conf})


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE: over the bins of `reliability_bins`, the image-weighted mean |accuracy - confidence|
    (0 = calibrated; lower is better)."""
    bins = reliability_bins(y_true, prob, n_bins)
    total = int(bins["count"].sum())
    if total == 0:
        return float("nan")
    filled = bins[bins["count"] > 0]
    return float((filled["count"] * (filled["accuracy"] - filled["confidence"]).abs()).sum() / total)
