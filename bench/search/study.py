"""`search`: load the data, run a study with the chosen engine, summarise it, register the best model.

Engines are registered functions that run trials through the shared `TrialRunner`; everything before and
after (data, parent run, leaderboard, test evaluation, registry) is the same for all of them.
"""

from __future__ import annotations

import os
import time

from bench import paths
from bench import tracking
from bench.data import Dataset, load_dataset
from bench.search import finish, workers
from bench.search.config import SearchConfig
from bench.search.context import SearchContext, SearchResult
from bench.search.engines import ENGINES
from bench.search.progress import Progress
from bench.search.space import load_space
from bench.tracking import tags as tag


def run(config: SearchConfig, dataset: Dataset | None = None) -> SearchResult:
    """`dataset`: already loaded data (the benchmark keeps one split while seeds vary); else `config.data`."""
    started = time.perf_counter()
    space = load_space(config.space)
    if dataset is None:
        dataset = load_dataset(config.data, image_size=config.image_size, seed=config.seed)
        print(dataset.summary, flush=True)
    c = tracking.client()
    worker_of = workers.parent_run_id()  # set when a coordinator (here or on another machine) started this process
    experiment_id = c.get_run(worker_of).info.experiment_id if worker_of else tracking.experiment_id_for(c, config.experiment)
    tags = {
        tag.STUDY: config.study_name,
        tag.ENGINE: config.engine,
        tag.SPACE: space.name,
        tag.DATA: dataset.name,
        tag.DATASET_FINGERPRINT: dataset.fingerprint,
        tag.OBJECTIVE: config.objective,
        tag.GIT_COMMIT: tracking.git_commit(),
    }
    resume = None if os.environ.get("MLFLOW_RUN_ID") else finish.previous_parent(c, experiment_id, config.study_name)
    parent = worker_of or tracking.start_parent(
        c, experiment_id, name=config.study_name, resume_run_id=resume,
        tags={**tags, tag.ROLE: tag.PARENT,
              tag.NOTE: f"{config.engine} study `{config.study_name}`: space {space.name} on "
                                     f"{dataset.name} at {config.image_size}px, objective {config.objective}."},
    )
    print(f"study {config.study_name}: engine {config.engine}, space {space.name}, {config.trials} trials x "
          f"{config.epochs} epochs, objective {config.objective}; MLflow run {parent} "
          f"(experiment {experiment_id}, {paths.tracking_uri()})", flush=True)
    ctx = SearchContext(config, dataset, space, c, experiment_id, parent, Progress(config), tags)
    if worker_of:  # trials only: the coordinator owns the parent run, the summary and the registry
        pool = workers.start(config, parent)
        if pool.procs:
            pool.wait()
        else:
            ENGINES.get(config.engine).run(ctx)
        return SearchResult(config.study_name, parent, None, {}, None, time.perf_counter() - started)
    with tracking.ending(c, parent):
        tracking.log_params_once(c, parent, vars(config))
        finish.log_dataset(c, parent, dataset)
        workers.start(config, parent).wait()
        ENGINES.get(config.engine).run(ctx)  # workers=1: runs the trials; else waits for other machines and tidies up
        result = finish.finish(ctx)
    result.seconds = time.perf_counter() - started
    print(f"done in {result.seconds:.0f}s; MLflow UI: mlflow ui --backend-store-uri {paths.tracking_uri()}",
          flush=True)
    return result
