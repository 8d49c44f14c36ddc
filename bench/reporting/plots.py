"""Evaluation figures: a static PNG (matplotlib) and an interactive HTML twin (plotly) of each."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from bench.metrics import classification_report  # noqa: E402

# Plotly's JS is 4.6 MB; loading it from the CDN keeps every trial's HTML artifact small.
PLOTLY_JS = "cdn"


def write_html(fig: go.Figure, path: Path) -> None:
    fig.write_html(path, include_plotlyjs=PLOTLY_JS, full_html=True)


def confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    counts = skm.confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
    rows = counts.sum(axis=1, keepdims=True)
    return counts, np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)


def confusion_png(counts: np.ndarray, normalised: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    size = max(8.0, 1.1 * len(class_names) * 2)
    fig, axes = plt.subplots(1, 2, figsize=(size, size / 2 + 0.8))
    for ax, matrix, subtitle, fmt in ((axes[0], counts, "counts", "d"), (axes[1], normalised, "row-normalised", ".2f")):
        skm.ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(
            ax=ax, cmap="Blues", colorbar=False, values_format=fmt, xticks_rotation=45
        )
        ax.set_title(f"{title} ({subtitle})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def confusion_figure(counts: np.ndarray, normalised: np.ndarray, class_names: list[str], title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("counts", "row-normalised"), horizontal_spacing=0.15)
    for col, matrix, text in ((1, counts, counts.astype(str)), (2, normalised, np.round(normalised, 2).astype(str))):
        fig.add_trace(
            go.Heatmap(z=matrix, x=class_names, y=class_names, text=text, texttemplate="%{text}", colorscale="Blues",
                       showscale=False, hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>"),
            row=1, col=col,
        )
        fig.update_yaxes(autorange="reversed", title_text="true", row=1, col=col)
        fig.update_xaxes(title_text="predicted", row=1, col=col)
    fig.update_layout(title=title, height=520, width=1100)
    return fig


def roc_curves(y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC per class present, plus the macro average (mean TPR on a common FPR grid)."""
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    grid = np.linspace(0, 1, 201)
    tprs = []
    for i, name in enumerate(class_names):
        positives = y_true == i
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = skm.roc_curve(positives, y_prob[:, i])
        curves[name] = (fpr, tpr, float(skm.auc(fpr, tpr)))
        tprs.append(np.interp(grid, fpr, tpr))
    if tprs:
        mean_tpr = np.mean(tprs, axis=0)
        mean_tpr[0] = 0.0
        curves["macro average"] = (grid, mean_tpr, float(skm.auc(grid, mean_tpr)))
    return curves


def roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for name, (fpr, tpr, area) in curves.items():
        style = {"lw": 3, "color": "black", "ls": "--"} if name == "macro average" else {"lw": 1.5}
        ax.plot(fpr, tpr, label=f"{name} (AUC {area:.3f})", **style)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> go.Figure:
    fig = go.Figure()
    for name, (fpr, tpr, area) in curves.items():
        line = {"width": 4, "dash": "dash", "color": "black"} if name == "macro average" else {"width": 2}
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {area:.3f})", line=line))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, showlegend=False))
    fig.update_layout(title=title, xaxis_title="false positive rate", yaxis_title="true positive rate",
                      height=560, width=680)
    return fig


def write_evaluation_artifacts(
    out_dir: Path, y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str], *, prefix: str = "", title: str = ""
) -> list[Path]:
    """`{prefix}confusion_matrix.png/.html`, `{prefix}roc_curve.png/.html`, `{prefix}classification_report.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    y_prob = np.asarray(y_prob)
    counts, normalised = confusion_matrices(y_true, y_prob.argmax(axis=1), len(class_names))
    curves = roc_curves(y_true, y_prob, class_names)
    label = f"{title} " if title else ""
    files = {
        "confusion_matrix.png": lambda p: confusion_png(counts, normalised, class_names, p, f"{label}confusion matrix"),
        "confusion_matrix.html": lambda p: write_html(confusion_figure(counts, normalised, class_names, f"{label}confusion matrix"), p),
        "roc_curve.png": lambda p: roc_png(curves, p, f"{label}ROC (one-vs-rest)"),
        "roc_curve.html": lambda p: write_html(roc_figure(curves, f"{label}ROC (one-vs-rest)"), p),
        "classification_report.json": lambda p: p.write_text(json.dumps(classification_report(y_true, y_prob, class_names), indent=2)),
    }
    written = []
    for name, write in files.items():
        path = out_dir / f"{prefix}{name}"
        write(path)
        written.append(path)
    return written
