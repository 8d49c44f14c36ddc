"""What the user watches: one line per trial and a summary table at the end."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from bench.config import SearchConfig
from bench.metrics import direction
from bench.space import summarize


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class Progress:
    """Prints `[n/N] trial k STATE objective=… best=… (trial j) 12.3s elapsed 1:05 | params`."""

    def __init__(self, config: SearchConfig) -> None:
        self.total, self.objective = config.trials, config.objective
        self.maximize = direction(config.objective) == "maximize"
        self.started = time.perf_counter()
        self.count = 0
        self.best: tuple[float, int] | None = None

    def set_best(self, best: tuple[float, int] | None) -> None:
        self.best = best

    def done(self, outcome: Any) -> None:
        self.count += 1
        value = outcome.value
        if value is not None and (self.best is None or (value > self.best[0]) == self.maximize and value != self.best[0]):
            self.best = (value, outcome.number)
        shown = f"{self.objective}={value:.4f}" if value is not None else outcome.reason or outcome.state.lower()
        best = f"best={self.best[0]:.4f} (trial {self.best[1]})" if self.best else "best=-"
        print(f"[{self.count:>2}/{self.total}] trial {outcome.number:<3} {outcome.state:<8} {shown:<28} {best:<24} "
              f"{outcome.seconds:5.1f}s  elapsed {clock(time.perf_counter() - self.started)} | "
              f"{summarize(outcome.params)}", flush=True)


def summary_table(board: pd.DataFrame, objective: str, *, top: int = 10) -> str:
    columns = [c for c in ("trial", "state", objective, "val_accuracy", "val_roc_auc_macro", "best_epoch",
                           "trial_seconds") if c in board]
    return board[columns].head(top).to_string(index=False, float_format=lambda v: f"{v:.4f}")
