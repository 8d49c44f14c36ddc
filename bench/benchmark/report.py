"""The benchmark's outputs: one row per contender and seed (test metrics with bootstrap intervals, what it spent)
and the plotly report (the search race, confusion matrices and ROC curves side by side, a reliability diagram)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bench.benchmark.config import BenchmarkConfig
from bench.benchmark.contenders import Outcome
from bench.benchmark.race import race_figure
from bench.data import Dataset
from bench.metrics import bootstrap_intervals, expected_calibration_error, reliability_bins
from bench.reporting.plots import PLOTLY_JS, confusion_matrices, roc_curves

GRID_COLUMNS = 4


def table_row(outcome: Outcome, ds: Dataset, config: BenchmarkConfig) -> dict[str, Any]:
    """One contender's row for one seed: test metrics with bootstrap intervals (by group where the split has
    groups), validation F1 and its gap to test, calibration, what it spent and its size."""
    row: dict[str, Any] = {"contender": outcome.name, "kind": outcome.kind, "seed": outcome.seed,
                           "weights": outcome.weights, "epochs": outcome.epochs, "images": outcome.epochs * len(ds.y_train),
                           "cpu_seconds": outcome.cpu_seconds, "wall_seconds": outcome.wall_seconds,
                           "trials": outcome.trials}
    if outcome.test_prob is None:
        return {**row, "error": outcome.error or "no model"}
    intervals = bootstrap_intervals(ds.y_test, outcome.test_prob, groups=ds.groups_test, n_resamples=config.n_bootstrap,
                                    seed=config.seed)
    for name, interval in intervals.items():
        row.update({f"test_{name}": interval.value, f"test_{name}_low": interval.low, f"test_{name}_high": interval.high})
    row.update({
        "val_value": outcome.val_value,
        "val_f1_macro": outcome.val_f1,
        "val_test_gap_f1": outcome.val_f1 - intervals["f1_macro"].value,
        "test_ece": expected_calibration_error(ds.y_test, outcome.test_prob),
        "train_seconds": outcome.train_seconds,
        "n_params": outcome.n_params,
        "run_id": outcome.run_id,
        "model_uri": outcome.model_uri,
        "error": outcome.error,
    })
    return row


def _grid(n: int) -> tuple[int, int]:
    cols = min(GRID_COLUMNS, max(1, n))
    return math.ceil(n / cols), cols


def confusion_grid(y_true: np.ndarray, probs: dict[str, np.ndarray], class_names: list[str]) -> go.Figure:
    rows, cols = _grid(len(probs))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(probs), horizontal_spacing=0.06, vertical_spacing=0.12)
    for i, (name, prob) in enumerate(probs.items()):
        counts, normalised = confusion_matrices(y_true, prob.argmax(axis=1), len(class_names))
        r, col = divmod(i, cols)
        fig.add_trace(go.Heatmap(z=normalised, x=class_names, y=class_names, zmin=0, zmax=1, colorscale="Blues",
                                 showscale=i == 0, text=counts, texttemplate="%{text}",
                                 hovertemplate=f"{name}<br>true %{{y}}<br>predicted %{{x}}<br>row share %{{z:.2f}}<extra></extra>"),
                      row=r + 1, col=col + 1)
        fig.update_yaxes(autorange="reversed", row=r + 1, col=col + 1)
    fig.update_layout(title="Test confusion matrices (colour: row-normalised; numbers: counts)", height=360 * rows, width=1400)
    return fig


def roc_grid(y_true: np.ndarray, probs: dict[str, np.ndarray], class_names: list[str]) -> go.Figure:
    rows, cols = _grid(len(probs))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(probs), horizontal_spacing=0.05, vertical_spacing=0.12)
    for i, (name, prob) in enumerate(probs.items()):
        r, col = divmod(i, cols)
        for label, (fpr, tpr, area) in roc_curves(y_true, prob, class_names).items():
            macro = label == "macro average"
            fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=label, legendgroup=label, showlegend=i == 0,
                                     line={"width": 3, "dash": "dash", "color": "black"} if macro else {"width": 1.5},
                                     hovertemplate=f"{name}: {label} (AUC {area:.3f})<extra></extra>"),
                          row=r + 1, col=col + 1)
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, showlegend=False),
                      row=r + 1, col=col + 1)
    fig.update_layout(title="Test ROC curves (one-vs-rest per class; dashed: macro average)", height=340 * rows, width=1400)
    return fig


def reliability_figure(y_true: np.ndarray, probs: dict[str, np.ndarray]) -> go.Figure:
    fig = go.Figure()
    for name, prob in probs.items():
        bins = reliability_bins(y_true, prob)
        bins = bins[bins["count"] > 0]
        fig.add_trace(go.Scatter(x=bins["confidence"], y=bins["accuracy"], mode="lines+markers", name=name,
                                 customdata=bins["count"], hovertemplate="confidence %{x:.2f}: accuracy %{y:.2f} "
                                 "(%{customdata} images)<extra>" + name + "</extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="perfectly calibrated"))
    fig.update_layout(title="Reliability diagram (test; 15 equal-width confidence bins)", xaxis_title="mean confidence",
                      yaxis_title="accuracy", height=560, width=800, xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def write_report(path: Path, *, table: str, race: pd.DataFrame, y_true: np.ndarray, probs: dict[str, np.ndarray],
                 class_names: list[str], references: dict[str, tuple[float, float, float]], title: str,
                 objective: str = "val_f1_macro") -> None:
    """One self-describing HTML page: the markdown table, then the four figures (plotly JS loaded once); the
    confusion, ROC and reliability figures show each contender's seed-median run (`probs`)."""
    figures = [race_figure(race, references, objective), confusion_grid(y_true, probs, class_names),
               roc_grid(y_true, probs, class_names), reliability_figure(y_true, probs)]
    parts = [fig.to_html(full_html=False, include_plotlyjs=PLOTLY_JS if i == 0 else False) for i, fig in enumerate(figures)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Test metrics: mean over seeds [95% interval across seeds]; "
            f"test [95% bootstrap interval of the seed-median run]. Validation picks each search's best model and the "
            f"winner; test decides nothing.</p><pre>{html.escape(table)}</pre>" + "".join(parts) + "</body></html>")
    path.write_text(page)
