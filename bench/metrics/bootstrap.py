"""Bootstrap confidence intervals for test-split metrics, resampling whole groups where groups exist.

Images from one source (a patient, a slide, near-duplicates) are not independent: resampling images one
by one understates the spread. With `groups`, each resample draws groups with replacement and keeps all
of a drawn group's images (the cluster bootstrap). Intervals are percentile intervals; every metric of one
table row is computed on the same resamples, so a row's intervals are consistent with each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.errors import ConfigError
from bench.metrics.table import INTERVAL_METRICS, Score

TABLE_METRICS: dict[str, Score] = INTERVAL_METRICS  # the benchmark table's test metrics


@dataclass(frozen=True)
class Interval:
    value: float  # the metric on the whole split
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def resample_indices(n: int, *, groups: np.ndarray | None = None, n_resamples: int = 1000,
                     seed: int = 0) -> list[np.ndarray]:
    """`n_resamples` index arrays into range(n): iid draws of n images, or draws of as many groups as there
    are, with replacement, each contributing all of its images (so a resample's size varies)."""
    if n_resamples < 1:
        raise ConfigError(f"The 'n_resamples' parameter must be an integer >= 1. Got {n_resamples!r} instead.")
    rng = np.random.default_rng(seed)
    if groups is None:
        return [rng.integers(0, n, n) for _ in range(n_resamples)]
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ConfigError(f"groups must have one entry per image ({n}); got {len(groups)}")
    _, codes = np.unique(groups, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(codes))[:-1])
    drawn = rng.integers(0, len(members), (n_resamples, len(members)))
    return [np.concatenate([members[g] for g in row]) for row in drawn]


def bootstrap_intervals(y_true: np.ndarray, y_prob: np.ndarray, *, groups: np.ndarray | None = None,
                        metrics: dict[str, Score] | None = None, n_resamples: int = 1000, confidence: float = 0.95,
                        seed: int = 0) -> dict[str, Interval]:
    """A percentile bootstrap interval per metric, all metrics on the same resamples."""
    if not 0 < confidence < 1:
        raise ConfigError(f"The 'confidence' parameter must be between 0 and 1 exclusive. Got {confidence!r} instead.")
    metrics = TABLE_METRICS if metrics is None else metrics
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    if len(y_true) == 0:
        raise ConfigError("cannot bootstrap metrics on an empty split")
    y_pred = y_prob.argmax(axis=1)
    draws = {name: [] for name in metrics}
    for idx in resample_indices(len(y_true), groups=groups, n_resamples=n_resamples, seed=seed):
        y, pred, prob = y_true[idx], y_pred[idx], y_prob[idx]
        for name, metric in metrics.items():
            draws[name].append(metric(y, pred, prob))
    tail = 100 * (1 - confidence) / 2
    out = {}
    for name, metric in metrics.items():
        values = np.asarray(draws[name], dtype=float)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
        out[name] = Interval(float(metric(y_true, y_pred, y_prob)), float(low), float(high))
    return out
