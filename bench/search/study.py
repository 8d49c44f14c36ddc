"""`search`: load the data, run a study with the chosen engine, summarise it, register the best model.

Engines are registered functions that run trials through the shared `TrialRunner`; everything before and
after (data, parent run, leaderboard, test evaluation, registry) is the same for all of them.
"""

from __future__ import annotations

import json
import os
import time

from mlflow.tracking import MlflowClient

from bench import machine, paths
from bench import tracking
from bench.data import Dataset, load_dataset
from bench.search import bag, finish, workers
from bench.search.budget import budget_words
from bench.search.config import SearchConfig
from bench.search.context import SearchContext, SearchResult
from bench.search.engines import ENGINES
from bench.search.progress import Progress
from bench.search.space import load_space
from bench.tracking import dblock
from bench.tracking import tags as tag
from bench.training import subset_words


def end_dead_runs(c: MlflowClient, experiment_id: str, study: str) -> list[str]:
    """End KILLED, with the reason, the study's parent, invocation, refit, refit_full and bag runs left RUNNING by a process that died
    on this host (SIGKILL, OOM killer, reboot); their trial runs are the engine's (it reaps dead trials)."""
    ended = []
    for role in (tag.PARENT, tag.INVOCATION_ROLE, tag.REFIT_ROLE, tag.REFIT_FULL_ROLE, tag.BAG_ROLE):
        for run in tracking.running_children(c, experiment_id, study, role=role):
            who = json.loads(run.data.tags.get(tag.PROCESS) or "null")
            if not workers.is_dead(who):
                continue
            reason = f"its process {who['pid']} on {who['host']} died (killed or crashed)"
            tracking.log_batch(c, run.info.run_id, tags={tag.REASON: reason})
            c.set_terminated(run.info.run_id, "KILLED")
            print(f"ended {role} run {run.info.run_id} KILLED: {reason}", flush=True)
            ended.append(run.info.run_id)
    return ended


def _study_parent(c: MlflowClient, experiment_id: str, config: SearchConfig, invocation: str | None,
                  tags: dict[str, str]) -> str:
    """The study's one parent run: its earlier parent when there is one (re-opened), else `mlflow run`'s run,
    else a new run. Under `mlflow run` of a study that already has its parent, the project's run records the
    invocation and points at the parent (tag and nesting), so the study stays one run in the UI."""
    end_dead_runs(c, experiment_id, config.study_name)
    me = json.dumps(workers.identity())
    previous = finish.previous_parent(c, experiment_id, config.study_name)
    parent = tracking.start_parent(c, experiment_id, name=config.study_name, resume_run_id=previous,
                                   tags={**tags, tag.PROCESS: me, tag.MACHINE: machine.describe()})
    if tag.REASON in c.get_run(parent).data.tags:  # it was ended KILLED; it runs again now
        c.delete_tag(parent, tag.REASON)
    if invocation and invocation != parent:
        tracking.log_batch(c, invocation, tags={
            tag.ROLE: tag.INVOCATION_ROLE, tag.STUDY: config.study_name, tag.STUDY_PARENT: parent,
            tag.PARENT_RUN_ID: parent, tag.PROCESS: me,
            tag.NOTE: f"`mlflow run` of study `{config.study_name}`; its trials and results are in parent run {parent}."})
        print(f"mlflow run {invocation} continues study {config.study_name} in its parent run {parent}", flush=True)
    return parent


def run(config: SearchConfig, dataset: Dataset | None = None) -> SearchResult:
    """`dataset`: already loaded data (the benchmark keeps one split while seeds vary); else `config.data`."""
    started = time.perf_counter()
    worker_of = workers.parent_run_id()  # set when a coordinator (here or on another machine) started this process
    invocation = None if worker_of else os.environ.get("MLFLOW_RUN_ID")  # `mlflow run`'s own run
    if invocation:  # before any work: `mlflow run` may have put its run in another experiment than asked
        tracking.check_run_experiment(tracking.client(), config.experiment, default=SearchConfig.experiment)
    space = load_space(config.space)
    if dataset is None:
        dataset = load_dataset(config.data, image_size=config.image_size, seed=config.seed)
        print(dataset.summary, flush=True)
    if config.bag_folds:  # before any trial: a dataset too small for the folds is one line now, not after the search
        bag.folds(dataset, config.bag_folds, config.seed)
    c = tracking.client()
    experiment_id = c.get_run(worker_of).info.experiment_id if worker_of else tracking.experiment_id_for(c, config.experiment)
    tags = {
        tag.STUDY: config.study_name,
        tag.ENGINE: config.engine,
        tag.SPACE: space.name,
        tag.DATA: dataset.name,
        tag.DATASET_FINGERPRINT: dataset.fingerprint,
        tag.SPLITS_FINGERPRINT: dataset.splits_fingerprint,
        tag.OBJECTIVE: config.objective,
        tag.GIT_COMMIT: tracking.git_commit(),
    }
    parent = worker_of or _study_parent(c, experiment_id, config, invocation, {
        **tags, tag.ROLE: tag.PARENT,
        tag.NOTE: f"{config.engine} study `{config.study_name}`: space {space.name} on "
                  f"{dataset.name} at {config.image_size}px, objective {config.objective}."})
    fraction = subset_words(dataset, config.subset, seed=config.seed)
    print(f"study {config.study_name}: engine {config.engine}, space {space.name}, {budget_words(config)}, "
          f"{f'{fraction}, ' if fraction else ''}objective {config.objective}; MLflow run {parent} "
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
        tracking.log_params_once(c, parent, {**vars(config), "storage": dblock.redact(config.storage)})
        finish.log_dataset(c, parent, dataset)
        workers.start(config, parent).wait()
        ENGINES.get(config.engine).run(ctx)  # workers=1: runs the trials; else waits for other machines and tidies up
        result = finish.finish(ctx)
    result.seconds = time.perf_counter() - started
    uri = paths.tracking_uri()
    ui = uri if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"
    print(f"done in {result.seconds:.0f}s; MLflow UI: {ui}", flush=True)
    return result
