"""Classification metrics of one split: the metric table's scores plus scikit-learn's per-class report."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.metrics.table import METRICS


def classification_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str], *, prefix: str, per_class: bool = True
) -> dict[str, float]:
    """`{prefix}_<name>` for every metric of the table, and per-class `_precision_<class>`, `_recall_<class>`,
    `_f1_<class>`."""
    from sklearn.metrics import precision_recall_fscore_support

    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    y_pred = y_prob.argmax(axis=1)
    out = {m.name: m.score(y_true, y_pred, y_prob) for m in METRICS}
    if per_class:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=list(range(len(class_names))),
                                                     zero_division=0)
        for i, name in enumerate(class_names):
            out.update({f"precision_{name}": p[i], f"recall_{name}": r[i], f"f1_{name}": f[i]})
    return {f"{prefix}_{key}": float(value) for key, value in out.items()}


def classification_report(y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    from sklearn.metrics import classification_report as report

    return report(y_true, np.asarray(y_prob).argmax(axis=1), labels=list(range(len(class_names))),
                  target_names=class_names, output_dict=True, zero_division=0)


def group_losses(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, class_names: list[str]):
    """One row per (class, source group): its images, its accuracy, and `points_lost`, the share of ALL images
    that the group's mistakes are (accuracy points it costs), largest first. On a split of augmented copies one
    source can cost several points: the Kaggle TEST is ~35 copies of each of 71 smears, 155 of one monocyte."""
    import pandas as pd

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    frame = pd.DataFrame({"class": np.asarray(class_names)[y_true], "group": np.asarray(groups),
                          "correct": y_true == y_pred, "predicted": np.asarray(class_names)[y_pred]})
    table = frame.groupby(["class", "group"]).agg(images=("correct", "size"), accuracy=("correct", "mean"),
                                                  most_predicted=("predicted", lambda p: p.mode().iloc[0]))
    table["points_lost"] = (1 - table["accuracy"]) * table["images"] / len(frame)
    return table.reset_index().sort_values(["points_lost", "class", "group"], ascending=[False, True, True],
                                           ignore_index=True)
