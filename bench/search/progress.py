"""What the user watches: one line per trial and a summary table at the end."""

from __future__ import annotations

import time

import pandas as pd

from bench.metrics import board_columns, direction
from bench.search.budget import UNLIMITED_TRIALS, limits
from bench.search.config import SearchConfig
from bench.search.trial import TrialOutcome
from bench.text import clock, summarize


class Progress:
    """Prints `[n/N] trial k STATE objective=… best=… (trial j) 12.3s elapsed 1:05 | params`. The bracket counts
    in the budget's units (this process's spending): `[n/N]` for trials, `[n | 12/40 epochs]`,
    `[n | 1:05/5:00]` for seconds."""

    def __init__(self, config: SearchConfig) -> None:
        self.limit, self.objective = limits(config), config.objective
        self.direction = direction(config.objective)
        self.started = time.perf_counter()
        self.count = self.epochs = 0
        self.best: tuple[float, int] | None = None

    def position(self) -> str:
        trials = self.limit["trials"]
        parts = [f"{self.count:>2}/{trials}" if 0 < trials < UNLIMITED_TRIALS else f"{self.count:>2}"]
        if self.limit["epochs"]:
            parts.append(f"{self.epochs}/{int(self.limit['epochs'])} epochs")
        if self.limit["seconds"]:
            parts.append(f"{clock(time.perf_counter() - self.started)}/{clock(self.limit['seconds'])}")
        return " | ".join(parts)

    def set_best(self, best: tuple[float, int] | None) -> None:
        self.best = best

    def done(self, outcome: TrialOutcome) -> None:
        self.count += 1
        self.epochs += len(outcome.history)
        value = outcome.value
        if value is not None and (self.best is None or self.direction.better(value, self.best[0])):
            self.best = (value, outcome.number)
        shown = f"{self.objective}={value:.4f}" if value is not None else outcome.reason or outcome.state.lower()
        best = f"best={self.best[0]:.4f} (trial {self.best[1]})" if self.best else "best=-"
        print(f"[{self.position()}] trial {outcome.number:<3} {outcome.state:<8} {shown:<28} {best:<24} "
              f"{outcome.seconds:5.1f}s  elapsed {clock(time.perf_counter() - self.started)} | "
              f"{summarize(outcome.params)}", flush=True)


def summary_table(board: pd.DataFrame, objective: str, *, top: int = 10) -> str:
    """The best `top` trials: state, the objective, the metric table's board columns, best epoch and time."""
    wanted = dict.fromkeys(["trial", "state", objective, *board_columns("val"), "best_epoch", "trial_seconds"])
    columns = [c for c in wanted if c in board]
    return board[columns].head(top).to_string(index=False, float_format=lambda v: f"{v:.4f}")
