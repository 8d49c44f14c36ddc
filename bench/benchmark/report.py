"""The benchmark's outputs: the comparison table (rows with bootstrap intervals, markdown) and the plotly report
(the search race, confusion matrices and ROC curves side by side, a reliability diagram)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mlflow.tracking import MlflowClient

from bench.benchmark.config import BenchmarkConfig
from bench.benchmark.contenders import Outcome
from bench.data import Dataset
from bench.metrics import METRICS, Interval, bootstrap_intervals, expected_calibration_error, reliability_bins
from bench.reporting.plots import PLOTLY_JS, confusion_matrices, roc_curves
from bench.tracking import tags as tag

GRID_COLUMNS = 4


def table_row(outcome: Outcome, ds: Dataset, config: BenchmarkConfig) -> dict[str, Any]:
    """One contender's row: test metrics with bootstrap intervals (by group where the split has groups),
    validation F1 and its gap to test, calibration, cost and size."""
    row: dict[str, Any] = {"contender": outcome.name, "kind": outcome.kind, "weights": outcome.weights}
    if outcome.test_prob is None:
        return {**row, "error": outcome.error or "no model"}
    intervals = bootstrap_intervals(ds.y_test, outcome.test_prob, groups=ds.groups_test, n_resamples=config.n_bootstrap,
                                    seed=config.seed)
    for name, interval in intervals.items():
        row.update({f"test_{name}": interval.value, f"test_{name}_low": interval.low, f"test_{name}_high": interval.high})
    row.update({
        "val_f1_macro": outcome.val_f1,
        "val_test_gap_f1": outcome.val_f1 - intervals["f1_macro"].value,
        "test_ece": expected_calibration_error(ds.y_test, outcome.test_prob),
        "train_seconds": outcome.train_seconds,
        "wall_seconds": outcome.wall_seconds,
        "trials": outcome.trials,
        "n_params": outcome.n_params,
        "run_id": outcome.run_id,
        "model_uri": outcome.model_uri,
        "error": outcome.error,
    })
    return row


TABLE_COLUMNS = {m.name: m.label for m in METRICS if m.interval}


def markdown(table: pd.DataFrame) -> str:
    """The comparison table: point value with its 95% bootstrap interval per test metric."""
    head = ["Contender", "Kind", *TABLE_COLUMNS.values(), "Val F1", "Val-test gap", "ECE", "Train s", "Wall s", "Trials", "Params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(value: Any, fmt: str) -> str:
        return "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, fmt)

    for _, r in table.iterrows():
        if pd.notna(r.get("test_accuracy")):
            cells = [str(Interval(r[f"test_{k}"], r[f"test_{k}_low"], r[f"test_{k}_high"])) for k in TABLE_COLUMNS]
            cells += [num(r["val_f1_macro"], ".3f"), num(r["val_test_gap_f1"], "+.3f"), num(r["test_ece"], ".3f"),
                      num(r["train_seconds"], ".0f"), num(r["wall_seconds"], ".0f"), num(int(r["trials"]), "d"),
                      num(int(r["n_params"]) if pd.notna(r["n_params"]) else None, ",d")]
        else:
            cells = [f"failed: {r.get('error', '')}"] + [""] * (len(head) - 3)
        weights = r.get("weights")
        kind = f"{r['kind']} (weights {weights})" if isinstance(weights, str) and weights else r["kind"]
        lines.append("| " + " | ".join([r["contender"], kind, *cells]) + " |")
    return "\n".join(lines)


def race_table(c: MlflowClient, experiment_id: str, outcomes: list[Outcome], objective: str) -> pd.DataFrame:
    """Per search contender, each finished trial's time since the search started (from the child run's end
    time) and the best validation objective reached so far by completed trials."""
    rows = []
    for o in outcomes:
        runs = c.search_runs([experiment_id], tag.run_filter({tag.STUDY: o.study, tag.ROLE: tag.TRIAL_ROLE}),
                             max_results=50000)
        for r in runs:
            if r.info.end_time is None:
                continue
            state = r.data.tags.get(tag.STATE, "?")
            value = r.data.metrics.get(objective, math.nan) if state == "COMPLETE" else math.nan
            rows.append({"contender": o.name, "trial": int(r.data.tags.get(tag.TRIAL, -1)), "state": state,
                         "seconds": r.info.end_time / 1000 - o.started, objective: value})
    race = pd.DataFrame(rows, columns=["contender", "trial", "state", "seconds", objective])
    race = race.astype({"seconds": float, objective: float}).sort_values(["contender", "seconds"]).reset_index(drop=True)
    race["best_so_far"] = race.groupby("contender")[objective].cummax()  # cummax skips NaN (pruned/failed)
    return race


def race_figure(race: pd.DataFrame, references: dict[str, tuple[float, float]], objective: str) -> go.Figure:
    fig = go.Figure()
    for name, part in race.groupby("contender", sort=False):
        part = part.dropna(subset=["best_so_far"])
        fig.add_trace(go.Scatter(x=part["seconds"], y=part["best_so_far"], mode="lines+markers", name=name,
                                 line={"shape": "hv"}, hovertemplate="%{x:.0f}s: %{y:.4f}<extra>" + name + "</extra>"))
    for name, (seconds, value) in references.items():
        fig.add_trace(go.Scatter(x=[seconds], y=[value], mode="markers", name=f"{name} (one fit)",
                                 marker={"symbol": "diamond", "size": 11}))
    fig.update_layout(title=f"Search race: best-so-far {objective} against wall-clock time", xaxis_title="seconds since "
                      "the contender started", yaxis_title=f"best {objective}", height=480, width=1100)
    return fig


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
                 class_names: list[str], references: dict[str, tuple[float, float]], title: str,
                 objective: str = "val_f1_macro") -> None:
    """One self-describing HTML page: the markdown table, then the four figures (plotly JS loaded once)."""
    figures = [race_figure(race, references, objective), confusion_grid(y_true, probs, class_names),
               roc_grid(y_true, probs, class_names), reliability_figure(y_true, probs)]
    parts = [fig.to_html(full_html=False, include_plotlyjs=PLOTLY_JS if i == 0 else False) for i, fig in enumerate(figures)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Test metrics with 95% bootstrap intervals; validation F1 picks each "
            f"search's best model.</p><pre>{html.escape(table)}</pre>" + "".join(parts) + "</body></html>")
    path.write_text(page)
