"""`search`: load the data, run a study with the chosen engine, summarise it, register the best model.

Engines are registered functions that run trials through the shared `TrialRunner`; everything before and
after (data, parent run, leaderboard, test evaluation, registry) is the same for all of them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from mlflow.tracking import MlflowClient

from bench import summary, tracking, workers
from bench.engines import engine
from bench.config import SearchConfig
from bench.data import Dataset, load_dataset
from bench.metrics import direction
from bench.report import Progress
from bench.space import Space, load_space
from bench.trial import TrialRunner


@dataclass
class SearchContext:
    config: SearchConfig
    dataset: Dataset
    space: Space
    client: MlflowClient
    experiment_id: str
    parent_run_id: str
    progress: Progress
    tags: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)  # engine-specific plotly figures for the parent run

    def runner(self, is_best: Callable[[float], bool]) -> TrialRunner:
        return TrialRunner(self.config, self.dataset, self.space, self.client, self.experiment_id, self.parent_run_id,
                           is_best=is_best, tags={**self.tags, "hemabench.role": "trial"}, on_done=self.progress.done)

    def better(self, a: float, b: float) -> bool:
        return a > b if direction(self.config.objective) == "maximize" else a < b


@dataclass
class SearchResult:
    study: str
    parent_run_id: str
    best: dict[str, Any] | None
    test_metrics: dict[str, float]
    model_version: str | None
    seconds: float
    test_prob: Any = None  # the best model's test-split probabilities, so a caller (the benchmark) need not re-predict


def run(config: SearchConfig) -> SearchResult:
    started = time.perf_counter()
    space = load_space(config.space)
    dataset = load_dataset(config.data, image_size=config.image_size, seed=config.seed)
    print(dataset.summary, flush=True)
    c = tracking.client()
    worker_of = workers.parent_run_id()  # set when a coordinator (here or on another machine) started this process
    experiment_id = c.get_run(worker_of).info.experiment_id if worker_of else tracking.experiment_id_for(c, config.experiment)
    tags = {
        "hemabench.study": config.study_name,
        "hemabench.engine": config.engine,
        "hemabench.space": space.name,
        "hemabench.data": dataset.name,
        "hemabench.dataset_fingerprint": dataset.fingerprint,
        "hemabench.objective": config.objective,
        "hemabench.git_commit": tracking.git_commit(),
    }
    resume = None if os.environ.get("MLFLOW_RUN_ID") else summary.previous_parent(c, experiment_id, config.study_name)
    parent = worker_of or tracking.start_parent(
        c, experiment_id, name=config.study_name, resume_run_id=resume,
        tags={**tags, "hemabench.role": "parent",
              "mlflow.note.content": f"{config.engine} study `{config.study_name}`: space {space.name} on "
                                     f"{dataset.name} at {config.image_size}px, objective {config.objective}."},
    )
    print(f"study {config.study_name}: engine {config.engine}, space {space.name}, {config.trials} trials x "
          f"{config.epochs} epochs, objective {config.objective}; MLflow run {parent} "
          f"(experiment {experiment_id}, {tracking.paths.tracking_uri()})", flush=True)
    ctx = SearchContext(config, dataset, space, c, experiment_id, parent, Progress(config), tags)
    if worker_of:  # trials only: the coordinator owns the parent run, the summary and the registry
        pool = workers.start(config, parent)
        if pool.procs:
            pool.wait()
        else:
            engine(config.engine)(ctx)
        return SearchResult(config.study_name, parent, None, {}, None, time.perf_counter() - started)
    with tracking.ending(c, parent):
        tracking.log_params_once(c, parent, vars(config))
        summary.log_dataset(c, parent, dataset)
        workers.start(config, parent).wait()
        engine(config.engine)(ctx)  # workers=1: runs the trials; else waits for other machines and tidies up
        result = summary.finish(ctx)
    result.seconds = time.perf_counter() - started
    print(f"done in {result.seconds:.0f}s; MLflow UI: mlflow ui --backend-store-uri {tracking.paths.tracking_uri()}",
          flush=True)
    return result
