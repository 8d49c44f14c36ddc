"""Anytime performance: per search contender and seed, the best validation objective reached so far against
cumulative training epochs and against wall-clock seconds; the figure draws the mean over seeds with a band
(lowest to highest seed), and `epochs_to_reach` says how many epochs each strategy needed to match a level."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from mlflow.tracking import MlflowClient
from plotly.subplots import make_subplots

from bench.benchmark.contenders import Outcome
from bench.search.budget import EPOCHS_METRIC
from bench.tracking import tags as tag

COLUMNS = ["contender", "seed", "trial", "state", "seconds", "epochs"]
GRID_POINTS = 60


def race_table(c: MlflowClient, experiment_id: str, outcomes: list[Outcome], objective: str) -> pd.DataFrame:
    """One row per ended trial of each search (by end time): seconds since its search started, cumulative
    epochs trained (pruned and failed trials included), and the best objective of completed trials so far."""
    rows = []
    for o in outcomes:
        runs = c.search_runs([experiment_id], tag.run_filter({tag.STUDY: o.study, tag.ROLE: tag.TRIAL_ROLE}),
                             max_results=50000)
        for r in runs:
            if r.info.end_time is None:
                continue
            state = r.data.tags.get(tag.STATE, "?")
            value = r.data.metrics.get(objective, math.nan) if state == "COMPLETE" else math.nan
            rows.append({"contender": o.name, "seed": o.seed, "trial": int(r.data.tags.get(tag.TRIAL, -1)),
                         "state": state, "seconds": r.info.end_time / 1000 - o.started,
                         "epochs": r.data.metrics.get(EPOCHS_METRIC, 0.0), objective: value})
    race = pd.DataFrame(rows, columns=[*COLUMNS, objective])
    race = race.astype({"seconds": float, "epochs": float, objective: float})
    race = race.sort_values(["contender", "seed", "seconds"]).reset_index(drop=True)
    keys = race.groupby(["contender", "seed"], sort=False)
    race["epochs"] = keys["epochs"].cumsum()
    race["best_so_far"] = keys[objective].cummax()  # cummax skips NaN (pruned/failed)
    return race


def _curves(part: pd.DataFrame, x: str, grid: np.ndarray) -> np.ndarray:
    """(seeds, grid) best-so-far as a step function of `x`; NaN before a seed's first completed trial."""
    out = []
    for _, seed in part.groupby("seed"):
        seed = seed.dropna(subset=["best_so_far"])
        at = np.searchsorted(seed[x].to_numpy(), grid, side="right") - 1
        values = seed["best_so_far"].to_numpy()
        out.append(np.where(at >= 0, values[np.clip(at, 0, None)] if len(values) else np.nan, np.nan))
    return np.array(out, dtype=float)


def race_figure(race: pd.DataFrame, references: dict[str, tuple[float, float, float]], objective: str) -> go.Figure:
    """Left: against cumulative epochs; right: against seconds. `references`: name -> (epochs, seconds, value)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("against cumulative training epochs", "against wall-clock seconds"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for i, (name, part) in enumerate(race.groupby("contender", sort=False)):
        colour = palette[i % len(palette)]
        for col, x in ((1, "epochs"), (2, "seconds")):
            grid = np.linspace(0, float(part[x].max()), GRID_POINTS)
            curves = _curves(part, x, grid)
            if not curves.size or np.all(np.isnan(curves)):
                continue
            with warnings.catch_warnings():  # grid points before a seed's first completed trial are NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, low, high = np.nanmean(curves, 0), np.nanmin(curves, 0), np.nanmax(curves, 0)
            fig.add_trace(go.Scatter(x=np.r_[grid, grid[::-1]], y=np.r_[high, low[::-1]], fill="toself", opacity=0.2,
                                     line={"width": 0, "color": colour}, showlegend=False, hoverinfo="skip",
                                     legendgroup=name), row=1, col=col)
            fig.add_trace(go.Scatter(x=grid, y=mean, mode="lines", name=f"{name} (mean of {len(curves)} seeds)",
                                     line={"shape": "hv", "color": colour}, legendgroup=name, showlegend=col == 1),
                          row=1, col=col)
    for name, (epochs, seconds, value) in references.items():
        for col, x in ((1, epochs), (2, seconds)):
            fig.add_trace(go.Scatter(x=[x], y=[value], mode="markers", name=f"{name} (one fit, mean)", legendgroup=name,
                                     marker={"symbol": "diamond", "size": 11}, showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title_text="cumulative training epochs", row=1, col=1)
    fig.update_xaxes(title_text="seconds since the contender started", row=1, col=2)
    fig.update_yaxes(title_text=f"best {objective} so far")
    fig.update_layout(title=f"Search race: best-so-far validation {objective} (band: lowest to highest seed)",
                      height=520, width=1400)
    return fig


def epochs_to_reach(race: pd.DataFrame, level: float) -> dict[str, str]:
    """Per search contender: the median over seeds of the cumulative epochs at which best-so-far first reached
    `level`, with how many seeds got there; "never" when fewer than half did."""
    out = {}
    for name, part in race.groupby("contender", sort=False):
        reached = [float(seed.loc[seed["best_so_far"] >= level, "epochs"].min()) for _, seed in part.groupby("seed")]
        n, hit = len(reached), [e for e in reached if np.isfinite(e)]
        median = float(np.median([e if np.isfinite(e) else np.inf for e in reached]))
        out[name] = f"{'never' if not np.isfinite(median) else f'{median:.0f}'} ({len(hit)}/{n} seeds reached it)"
    return out
