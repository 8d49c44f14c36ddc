"""Registry rules: the `champion` alias moves only to a model that beats it on the same data and split.

Every version carries tags for the dataset fingerprint, space, trial, test metrics and git commit. A model
that does not beat the champion (or was trained on other data) gets alias `challenger` and a tag saying why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from bench import tracking
from bench.metrics import direction

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Registered:
    version: str
    alias: str
    reason: str


def decide(objective: str, new_value: float, new_fingerprint: str, champion_tags: dict[str, str] | None) -> tuple[str, str]:
    """(alias, reason) for a new version against the current champion's tags."""
    if champion_tags is None:
        return CHAMPION, "first registered model"
    if champion_tags.get("dataset_fingerprint") != new_fingerprint:
        return CHALLENGER, (f"champion was evaluated on dataset {champion_tags.get('dataset_fingerprint')}, this model on "
                            f"{new_fingerprint}: not comparable")
    key = objective.replace("val_", "test_", 1)
    try:
        old_value = float(champion_tags.get(key, "nan"))
    except ValueError:
        old_value = math.nan
    maximize = direction(objective) == "maximize"
    if math.isnan(old_value) or (new_value > old_value if maximize else new_value < old_value):
        return CHAMPION, f"{key} {new_value:.4f} beats champion's {old_value:.4f}"
    return CHALLENGER, f"{key} {new_value:.4f} does not beat champion's {old_value:.4f}"


def register(c: MlflowClient, *, config: Any, run_id: str, model_uri: str, dataset: Any, test_metrics: dict[str, float], trial: int,
             space: str) -> Registered:
    name = config.registered_model
    key = config.objective.replace("val_", "test_", 1)
    existing = c.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:  # a resumed study whose best trial is already registered: no duplicate version
        version = existing[0]
        return Registered(version.version, version.tags.get("hemabench.alias", "?"), "already registered")
    try:
        champion = c.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None
    alias, reason = decide(config.objective, test_metrics[key], dataset.fingerprint, champion.tags if champion else None)
    tags = {
        "dataset_fingerprint": dataset.fingerprint,
        "data": dataset.name,
        "space": space,
        "study": config.study_name,
        "trial": str(trial),
        "objective": config.objective,
        "git_commit": tracking.git_commit(),
        "hemabench.alias": alias,
        "hemabench.reason": reason,
        **{k: f"{v:.6g}" for k, v in test_metrics.items()},
    }
    version = mlflow.register_model(model_uri, name, tags=tags)
    c.set_registered_model_alias(name, alias, version.version)
    c.set_model_version_tag(name, version.version, "hemabench.alias", alias)
    return Registered(version.version, alias, reason)
