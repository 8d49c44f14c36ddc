"""The one metric table: every classification metric HemaBench reports, with its direction and its label.

It feeds the per-trial metrics (`classification_metrics`), the leaderboard, the progress summary and the
benchmark's columns and bootstrap intervals. Adding a metric is one `MetricSpec` here plus its test.

The scores are scikit-learn's definitions (macro over every label, zero_division=0; one-vs-rest AUC over the
classes present) written on the confusion matrix and ranks, because the bootstrap calls them thousands of
times (sklearn: ~17 s per contender); tests check that they equal sklearn's values.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Score = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
"""(y_true, y_pred, y_prob) -> value."""


class Direction(str, enum.Enum):
    """Which way a metric improves; the study direction follows from the objective's name."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"

    @classmethod
    def of(cls, metric: str) -> Direction:
        """`_loss`/`_error` go down, everything else up."""
        return cls.MINIMIZE if metric.endswith(("_loss", "_error")) else cls.MAXIMIZE

    def better(self, a: float, b: float) -> bool:
        """Strictly better: a tie keeps the incumbent."""
        return a > b if self is Direction.MAXIMIZE else a < b

    @property
    def ascending(self) -> bool:
        """Sort order that puts the best first."""
        return self is Direction.MINIMIZE


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)  # zero_division=0


def _per_class(y: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cm = _confusion(y, pred, prob.shape[1])
    tp = np.diag(cm).astype(float)
    precision, recall = _ratio(tp, cm.sum(axis=0)), _ratio(tp, cm.sum(axis=1))
    return precision, recall, _ratio(2 * tp, cm.sum(axis=0) + cm.sum(axis=1))


def _auc_macro(y: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> float:
    """One-vs-rest AUC per class present (Mann-Whitney on tied-average ranks), averaged; NaN with one class."""
    from scipy.stats import rankdata  # scipy.stats costs ~1.4 s to import: not for a command line that only validates

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


def _log_loss(y: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> float:
    from sklearn.metrics import log_loss  # scikit-learn costs ~1 s to import: only where a loss is computed

    return float(log_loss(y, np.clip(prob, 1e-7, 1.0), labels=list(range(prob.shape[1]))))


@dataclass(frozen=True)
class MetricSpec:
    """`name` is the key (`val_<name>`, `test_<name>`); `interval`: bootstrapped in the benchmark table;
    `board`: a column of the leaderboard and the search summary."""

    name: str
    label: str
    score: Score
    interval: bool = True
    board: bool = True

    @property
    def direction(self) -> Direction:
        return Direction.of(self.name)


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("accuracy", "Accuracy", lambda y, pred, prob: float(np.mean(y == pred))),
    MetricSpec("precision_macro", "Precision (macro)", lambda y, p, prob: float(_per_class(y, p, prob)[0].mean()),
               board=False),
    MetricSpec("recall_macro", "Recall (macro)", lambda y, p, prob: float(_per_class(y, p, prob)[1].mean()), board=False),
    MetricSpec("f1_macro", "F1 (macro)", lambda y, p, prob: float(_per_class(y, p, prob)[2].mean())),
    MetricSpec("roc_auc_macro", "AUC-ROC (macro OvR)", _auc_macro),
    MetricSpec("loss", "Log loss", _log_loss, interval=False),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
OBJECTIVES = tuple(f"val_{name}" for name in METRIC_NAMES)
INTERVAL_METRICS: dict[str, Score] = {m.name: m.score for m in METRICS if m.interval}


def direction(objective: str) -> Direction:
    """The study direction implied by a metric name."""
    return Direction.of(objective)


def board_columns(prefix: str) -> list[str]:
    """`<prefix>_<name>` for the metrics shown on the leaderboard and in the search summary."""
    return [f"{prefix}_{m.name}" for m in METRICS if m.board]


def test_key(objective: str) -> str:
    """The objective on the test split: `val_f1_macro` -> `test_f1_macro`."""
    return objective.replace("val_", "test_", 1)
