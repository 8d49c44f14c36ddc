"""Registry rules: the `champion` alias moves only to a model that beats it on the same data and split.

Every version carries tags for the dataset fingerprint, space, trial, test metrics and git commit, and
`hemabench.alias`/`hemabench.reason`: the alias it was given at registration and why. A model that does not
beat the champion (or was evaluated on other data or another split) gets alias `challenger`; a champion that
is replaced gets `hemabench.superseded_by`. Registering the same run again returns its version (no duplicate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlflow
from mlflow.tracking import MlflowClient

from bench.tracking import runs as tracking
from bench.data import Dataset
from bench.metrics import direction, test_key
from bench.tracking import tags as tag

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Registered:
    version: int | str  # as MLflow returns it
    alias: str
    reason: str


def decide(objective: str, new_value: float, new_fingerprint: str, champion_tags: dict[str, str] | None) -> tuple[str, str]:
    """(alias, reason) for a new version against the current champion's tags."""
    if champion_tags is None:
        return CHAMPION, "first registered model"
    if champion_tags.get("dataset_fingerprint") != new_fingerprint:
        return CHALLENGER, (f"champion was evaluated on dataset {champion_tags.get('dataset_fingerprint')}, this model on "
                            f"{new_fingerprint}: not comparable")
    key = test_key(objective)
    try:
        old_value = float(champion_tags.get(key, "nan"))
    except ValueError:
        old_value = math.nan
    if math.isnan(old_value):
        return CHAMPION, f"champion has no {key} to compare; this model has {key} {new_value:.4f}"
    if direction(objective).better(new_value, old_value):  # a tie keeps the champion
        return CHAMPION, f"{key} {new_value:.4f} beats champion's {old_value:.4f}"
    return CHALLENGER, f"{key} {new_value:.4f} does not beat champion's {old_value:.4f}"


def register(c: MlflowClient, *, name: str, objective: str, study: str, run_id: str, model_uri: str, dataset: Dataset,
             test_metrics: dict[str, float], trial: int, space: str) -> Registered:
    """Register `model_uri` as a version of `name` and give it the champion or challenger alias (see the module)."""
    key = test_key(objective)
    existing = c.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:  # a resumed study whose best trial is already registered: no duplicate version
        version = c.get_model_version(name, existing[0].version)
        return Registered(version.version, ",".join(version.aliases) or "none", "already registered")
    try:
        champion = c.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None
    alias, reason = decide(objective, test_metrics[key], dataset.fingerprint, champion.tags if champion else None)
    tags = {
        "dataset_fingerprint": dataset.fingerprint,
        "data": dataset.name,
        "space": space,
        "study": study,
        "trial": str(trial),
        "objective": objective,
        "git_commit": tracking.git_commit(),
        tag.ALIAS: alias,
        tag.REASON: reason,
        **{k: repr(float(v)) for k, v in test_metrics.items()},  # full precision: the next decide() compares them
    }
    version = mlflow.register_model(model_uri, name, tags=tags)
    c.set_registered_model_alias(name, alias, version.version)
    if alias == CHAMPION and champion is not None:
        c.set_model_version_tag(name, champion.version, tag.SUPERSEDED_BY, str(version.version))
    return Registered(version.version, alias, reason)
