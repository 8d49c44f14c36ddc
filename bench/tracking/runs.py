"""MLflow plumbing: the tracking URI, the parent run, child runs, and batched logging."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import mlflow
from mlflow.entities import Experiment, Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bench.tracking import dblock
from bench import paths
from bench.errors import ConfigError
from bench.tracking import tags as tag

# MLflow's log_batch limits per call.
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100


def client() -> MlflowClient:
    # Against a tracking server MLflow prints two link lines per ended run; the progress lines already say it all.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = paths.tracking_uri()
    dblock.prepare_mlflow(uri)  # a fresh sqlite store is created under a lock: workers may start at once
    mlflow.set_tracking_uri(uri)
    return MlflowClient()


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def log_batch(c: MlflowClient, run_id: str, *, metrics: dict[str, float] | None = None,
              params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
              history: list[dict[str, float]] | None = None) -> None:
    """One round trip per ~1000 values: final metrics, parameters, tags, and per-epoch curves (stepped by epoch).

    Final metrics share keys with the curves (`val_accuracy` …) and hold the kept (best-epoch) model's values,
    so they are logged at the last epoch's step with a later timestamp: MLflow shows them as the latest value.
    """
    now = int(time.time() * 1000)
    metric_rows = []
    for epoch, row in enumerate(history or [], start=1):
        metric_rows.extend(Metric(k, float(v), now, epoch) for k, v in row.items())
    last_step = len(history or [])
    metric_rows.extend(Metric(k, float(v), now + 1, last_step) for k, v in (metrics or {}).items())
    param_rows = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    tag_rows = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
    for chunk in _chunks(metric_rows, _MAX_METRICS):
        c.log_batch(run_id, metrics=chunk)
    for chunk in _chunks(param_rows, _MAX_PARAMS):
        c.log_batch(run_id, params=chunk)
    for chunk in _chunks(tag_rows, _MAX_TAGS):
        c.log_batch(run_id, tags=chunk)


def log_params_once(c: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Parameters of a resumed run cannot change: log new ones, and record changed ones as `resumed_with.*` tags."""
    logged = c.get_run(run_id).data.params
    fresh = {k: v for k, v in params.items() if k not in logged}
    changed = {f"resumed_with.{k}": v for k, v in params.items() if k in logged and logged[k] != str(v)}
    log_batch(c, run_id, params=fresh, tags=changed)


def log_files(c: MlflowClient, run_id: str, write: Callable[[Path], Any], *, artifact_path: str | None = None) -> None:
    """Let `write` fill a temporary folder, then upload it in one call."""
    with tempfile.TemporaryDirectory(prefix="hemabench-") as tmp:
        write(Path(tmp))
        c.log_artifacts(run_id, tmp, artifact_path)


def experiment_id_for(c: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if missing. Under `mlflow run`, the run's own experiment wins."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        return c.get_run(run_id).info.experiment_id
    experiment = c.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return c.create_experiment(name)
    except mlflow.exceptions.MlflowException:
        # Another worker created it between our lookup and create.
        return c.get_experiment_by_name(name).experiment_id


def check_run_experiment(c: MlflowClient, name: str, *, default: str) -> None:
    """Under `mlflow run`, MLflow has put the run in the experiment named by --experiment-name (Default without
    one) before this code starts, and a run cannot move: an `experiment` parameter naming another one stops here
    with what to pass. The parameter's `default` yields to an explicit --experiment-name (as `make search` passes)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    actual = c.get_experiment(c.get_run(run_id).info.experiment_id).name
    if actual != name and (name != default or actual == Experiment.DEFAULT_EXPERIMENT_NAME):
        raise ConfigError(f"under `mlflow run` every run goes to the experiment named by --experiment-name, here "
                          f"{actual!r}, not experiment={name!r}: pass `--experiment-name {name}` to mlflow run")


def start_parent(c: MlflowClient, experiment_id: str, *, name: str, resume_run_id: str | None, tags: dict[str, str]) -> str:
    """The parent run: the study's earlier parent (`resume_run_id`) when there is one, else `mlflow run`'s run,
    else a new run."""
    run_id = resume_run_id or os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        try:
            c.get_run(run_id)
            c.update_run(run_id, status="RUNNING", name=name)
            log_batch(c, run_id, tags=tags)
            return run_id
        except mlflow.exceptions.MlflowException:
            pass  # the stored parent was deleted: start a new one
    return c.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def start_child(c: MlflowClient, experiment_id: str, parent_run_id: str, *, name: str, tags: dict[str, str]) -> str:
    tags = {tag.PARENT_RUN_ID: parent_run_id, **tags}
    return c.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def running_children(c: MlflowClient, experiment_id: str, study: str, *, role: str = tag.TRIAL_ROLE) -> list[Any]:
    """The study's runs of `role` (trials by default) still RUNNING (live ones, or ones a killed process left)."""
    return c.search_runs([experiment_id], tag.run_filter({tag.STUDY: study, tag.ROLE: role})
                                          + " and attributes.status = 'RUNNING'", max_results=10000)


@contextmanager
def ending(c: MlflowClient, run_id: str) -> Iterator[None]:
    """End `run_id` FINISHED when the block completes, KILLED on Ctrl-C, FAILED on any error: never RUNNING."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        c.set_terminated(run_id, status)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
