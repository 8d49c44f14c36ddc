"""Bootstrap confidence intervals for test-split metrics, resampling whole groups where groups exist.

Images from one source (a patient, a slide, near-duplicates) are not independent: resampling images one
by one understates the spread. With `groups`, each resample draws groups with replacement and keeps all
of a drawn group's images (the cluster bootstrap). Intervals are percentile intervals; every metric of one
table row is computed on the same resamples, so a row's intervals are consistent with each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import rankdata

from bench.errors import ConfigError

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
"""(y_true, y_pred, y_prob) -> value."""


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)  # zero_division=0, as in bench.metrics


def _per_class(y: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cm = _confusion(y, pred, prob.shape[1])
    tp = np.diag(cm).astype(float)
    precision, recall = _ratio(tp, cm.sum(axis=0)), _ratio(tp, cm.sum(axis=1))
    return precision, recall, _ratio(2 * tp, cm.sum(axis=0) + cm.sum(axis=1))


def _auc_macro(y: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> float:
    """One-vs-rest AUC per class present (Mann-Whitney on tied-average ranks), averaged; NaN with one class."""
    ranks = rankdata(prob, axis=0)
    aucs = []
    for c in np.unique(y):
        positive = y == c
        n_pos = int(positive.sum())
        n_neg = len(y) - n_pos
        if n_neg == 0:
            continue
        aucs.append((ranks[positive, c].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    if prob.shape[1] == 2 and aucs:
        return float(aucs[-1])
    return float(np.mean(aucs)) if aucs else float("nan")


# The comparison table's test metrics. They are the scikit-learn definitions (macro over every label,
# zero_division=0; OvR AUC over the classes present, as bench.metrics.roc_auc_macro), written on the
# confusion matrix and ranks because calling sklearn 5 x 1000 times per contender takes ~17 s; the tests
# check they equal sklearn's values.
TABLE_METRICS: dict[str, Metric] = {
    "accuracy": lambda y, pred, prob: float(np.mean(y == pred)),
    "precision_macro": lambda y, pred, prob: float(_per_class(y, pred, prob)[0].mean()),
    "recall_macro": lambda y, pred, prob: float(_per_class(y, pred, prob)[1].mean()),
    "f1_macro": lambda y, pred, prob: float(_per_class(y, pred, prob)[2].mean()),
    "roc_auc_macro": _auc_macro,
}


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
                        metrics: dict[str, Metric] | None = None, n_resamples: int = 1000, confidence: float = 0.95,
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
