"""What an engine gets and what a search returns: the `SearchContext` (config, data, space, MLflow ids, progress)
and the `SearchResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import plotly.graph_objects as go

from bench.metrics import direction
from bench.search.progress import Progress
from bench.search.trial import Study, TrialRunner
from bench.tracking import tags as tag
from bench.training import subset_size


@dataclass
class SearchContext(Study):
    """What an engine runs a study with: the study, its progress printer and run tags, and the figures it adds."""

    progress: Progress
    tags: dict[str, str]
    figures: dict[str, go.Figure] = field(default_factory=dict)  # engine-specific plotly figures for the parent run

    def runner(self, is_best: Callable[[float], bool]) -> TrialRunner:
        return TrialRunner(self.config, self.dataset, self.space, self.client, self.experiment_id, self.parent_run_id,
                           is_best=is_best, tags={**self.tags, tag.ROLE: tag.TRIAL_ROLE}, on_done=self.progress.done)

    @property
    def trial_images(self) -> int:
        """Training images per epoch of a trial (a `subset` of the training split, or all of it): the budget's unit."""
        return subset_size(self.dataset, self.config.subset, seed=self.config.seed)

    def better(self, a: float, b: float) -> bool:
        return direction(self.config.objective).better(a, b)


@dataclass
class SearchResult:
    study: str
    parent_run_id: str
    best: dict[str, object] | None
    test_metrics: dict[str, float]
    model_version: str | None
    seconds: float
    test_prob: np.ndarray | None = None  # the best model's test-split probabilities, so a caller (the benchmark) need not re-predict
