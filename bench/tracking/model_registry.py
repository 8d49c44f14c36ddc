"""Registry rules: nothing is chosen on test. The `champion` alias moves only to a model whose VALIDATION objective
(the value that chose it among its trials) beats the champion's, on an identical split.

An identical split is an equal splits fingerprint (`Dataset.splits_fingerprint`: a hash of every image's file,
content, class, group and split), tagged `hemabench.splits_fingerprint` on each version; the dataset fingerprint
(content plus the split's *inputs*: rule, seed, fractions) is not enough, since a change in the split code or in
the group rule moves images between splits under the same inputs. Every version carries tags for the dataset and
splits fingerprints, space, study, trial, the objective and its validation value, the test metrics (recorded and
shown, never compared), the git commit, `hemabench.chosen_on` (`validation`) and `hemabench.alias`/`hemabench.reason`:
the alias it was given at registration and why. A model that does not beat the champion (a tie keeps it), was
evaluated on another split, or has another objective gets alias `challenger`; a replaced champion gets
`hemabench.superseded_by`. Registering the same run again returns its version (no duplicate).

Legacy versions, registered before this rule, were chosen on the test objective and carry no splits fingerprint
and no validation value. The next registration under their name tags each of them `hemabench.chosen_on=test (legacy
rule)`; they keep their aliases. A legacy champion cannot be compared on validation (it has no value, and no
recorded split), and comparing test with test would choose on test again; keeping it until something beats its test
score would leave test the judge for good. So the first model ranked on validation on the same data (an equal dataset
fingerprint: the old rule's own test of comparability) replaces it; a model on other data is a challenger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlflow
from mlflow.tracking import MlflowClient

from bench.tracking import runs as tracking
from bench.data import Dataset
from bench.metrics import direction
from bench.tracking import tags as tag

CHAMPION, CHALLENGER = "champion", "challenger"
ON_VALIDATION, ON_TEST_LEGACY = "validation", "test (legacy rule)"  # values of hemabench.chosen_on
DATASET = "dataset_fingerprint"  # version tag (unprefixed, as the versions registered before this rule have it)


@dataclass(frozen=True)
class Registered:
    version: int | str  # as MLflow returns it
    alias: str
    reason: str


def _number(tags: dict[str, str], key: str) -> float:
    try:
        return float(tags.get(key, "nan"))
    except ValueError:
        return math.nan


def decide(objective: str, val_value: float, splits_fingerprint: str, dataset_fingerprint: str,
           champion_tags: dict[str, str] | None) -> tuple[str, str]:
    """(alias, reason) for a new version with validation `objective` = `val_value` against the champion's tags."""
    if champion_tags is None:
        return CHAMPION, "first registered model"
    if not math.isfinite(val_value):
        return CHALLENGER, f"this model has no finite {objective} to compare"
    if tag.SPLITS_FINGERPRINT not in champion_tags:  # registered under the legacy (test) rule: see the module
        if champion_tags.get(DATASET) != dataset_fingerprint:
            return CHALLENGER, (f"legacy champion was evaluated on dataset {champion_tags.get(DATASET)}, this model on "
                                f"{dataset_fingerprint}: not comparable")
        return CHAMPION, (f"legacy champion was chosen on test and has no {objective} on a recorded split; the first "
                          f"model ranked on validation on the same data replaces it ({objective} {val_value:.4f})")
    if champion_tags[tag.SPLITS_FINGERPRINT] != splits_fingerprint:
        return CHALLENGER, (f"champion was evaluated on split {champion_tags[tag.SPLITS_FINGERPRINT]}, this model on "
                            f"{splits_fingerprint}: not comparable")
    old_value = _number(champion_tags, objective)
    if math.isnan(old_value):
        return CHALLENGER, (f"champion has no {objective} (it was chosen on {champion_tags.get('objective')}): "
                            "not comparable")
    if direction(objective).better(val_value, old_value):  # a tie keeps the champion
        return CHAMPION, f"{objective} {val_value:.4f} beats champion's {old_value:.4f} on the same split"
    return CHALLENGER, f"{objective} {val_value:.4f} does not beat champion's {old_value:.4f} on the same split"


def mark_legacy(c: MlflowClient, name: str) -> list[str]:
    """Tag every version of `name` registered under the legacy rule (no splits fingerprint) with how it was chosen,
    `hemabench.chosen_on=test (legacy rule)`; aliases stay. Returns the versions tagged now."""
    marked = [v.version for v in c.search_model_versions(f"name='{name}'")
              if tag.SPLITS_FINGERPRINT not in v.tags and tag.CHOSEN_ON not in v.tags]
    for version in marked:
        c.set_model_version_tag(name, version, tag.CHOSEN_ON, ON_TEST_LEGACY)
    return marked


def register(c: MlflowClient, *, name: str, objective: str, study: str, run_id: str, model_uri: str, dataset: Dataset,
             val_value: float, test_metrics: dict[str, float], trial: int | str, space: str) -> Registered:
    """Register `model_uri` as a version of `name` and give it the champion or challenger alias (see the module).
    `val_value`: the objective on validation, the value that chose this model; `test_metrics` are only recorded."""
    mark_legacy(c, name)
    existing = c.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:  # a resumed study whose best trial is already registered: no duplicate version
        version = c.get_model_version(name, existing[0].version)
        return Registered(version.version, ",".join(version.aliases) or "none", "already registered")
    try:
        champion = c.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None
    alias, reason = decide(objective, val_value, dataset.splits_fingerprint, dataset.fingerprint,
                           champion.tags if champion else None)
    tags = {
        DATASET: dataset.fingerprint,
        tag.SPLITS_FINGERPRINT: dataset.splits_fingerprint,
        "data": dataset.name,
        "space": space,
        "study": study,
        "trial": str(trial),
        "objective": objective,
        objective: repr(float(val_value)),  # full precision: the next decide() compares it
        tag.CHOSEN_ON: ON_VALIDATION,
        "git_commit": tracking.git_commit(),
        tag.ALIAS: alias,
        tag.REASON: reason,
        **{k: repr(float(v)) for k, v in test_metrics.items()},  # recorded and shown, never compared
    }
    version = mlflow.register_model(model_uri, name, tags=tags)
    c.set_registered_model_alias(name, alias, version.version)
    if alias == CHAMPION and champion is not None:
        c.set_model_version_tag(name, champion.version, tag.SUPERSEDED_BY, str(version.version))
    return Registered(version.version, alias, reason)
