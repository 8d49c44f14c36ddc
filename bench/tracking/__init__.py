"""Tracking: MLflow runs (parent, children, batched logging), every `hemabench.*` tag, the sqlite creation lock,
and the MLflow model registry with its champion rule. Imports the core and metrics."""

from bench.tracking import tags
from bench.tracking.model_registry import CHALLENGER, CHAMPION, Registered, decide, register
from bench.tracking.runs import (
    check_run_experiment, client, ending, experiment_id_for, git_commit, log_batch, log_files, log_params_once, running_children,
    start_child, start_parent,
)

__all__ = ["CHALLENGER", "CHAMPION", "Registered", "check_run_experiment", "client", "decide", "ending", "experiment_id_for", "git_commit",
           "log_batch", "log_files", "log_params_once", "register", "running_children", "start_child", "start_parent",
           "tags"]
