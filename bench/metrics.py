"""Classification metrics, all from scikit-learn. Keys carry their direction: `_loss`/`_error` go down."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

METRIC_NAMES = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro", "loss")
OBJECTIVES = tuple(f"val_{name}" for name in METRIC_NAMES)


def direction(objective: str) -> str:
    """Optuna study direction implied by a metric name."""
    return "minimize" if objective.endswith(("_loss", "_error")) else "maximize"


def roc_auc_macro(y_true: np.ndarray, y_prob: np.ndarray, n_classes: int) -> float:
    """One-vs-rest macro AUC (plain ROC AUC for two classes); NaN when a split lacks a class."""
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    if n_classes == 2:
        return float(skm.roc_auc_score(y_true, y_prob[:, 1]))
    if len(present) < n_classes:
        # sklearn's multi-class AUC needs every class present: average over the classes that are.
        return float(np.mean([skm.roc_auc_score(y_true == c, y_prob[:, c]) for c in present]))
    return float(skm.roc_auc_score(y_true, y_prob, multi_class="ovr", average="macro", labels=list(range(n_classes))))


def classification_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str], *, prefix: str, per_class: bool = True
) -> dict[str, float]:
    """`{prefix}_accuracy`, `_precision_macro`, `_recall_macro`, `_f1_macro`, `_roc_auc_macro`, `_loss`,
    and per-class `_precision_<class>`, `_recall_<class>`, `_f1_<class>`."""
    labels = list(range(len(class_names)))
    y_pred = np.asarray(y_prob).argmax(axis=1)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    out = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "precision_macro": precision,
        "recall_macro": recall,
        "f1_macro": f1,
        "roc_auc_macro": roc_auc_macro(y_true, y_prob, len(class_names)),
        "loss": skm.log_loss(y_true, np.clip(y_prob, 1e-7, 1.0), labels=labels),
    }
    if per_class:
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        for i, name in enumerate(class_names):
            out.update({f"precision_{name}": p[i], f"recall_{name}": r[i], f"f1_{name}": f[i]})
    return {f"{prefix}_{key}": float(value) for key, value in out.items()}


def classification_report(y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    return skm.classification_report(
        y_true,
        np.asarray(y_prob).argmax(axis=1),
        labels=list(range(len(class_names))),
        target_names=class_names,
        output_dict=True,
        zero_division=0,
    )


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 15) -> float:
    """ECE: over equal-width bins of top-class confidence, the image-weighted mean |accuracy - confidence|
    (0 = calibrated; lower is better). Bins are (k/n, (k+1)/n], the convention of Guo et al. (2017)."""
    prob = np.asarray(prob)
    if len(prob) == 0:
        return float("nan")
    confidence = prob.max(axis=1)
    correct = prob.argmax(axis=1) == np.asarray(y_true)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total / len(prob))
