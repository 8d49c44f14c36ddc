"""Champion rules: nothing is chosen on test. The `champion` alias moves only to a model whose validation objective
beats the champion's on an identical split (equal splits fingerprint); anything else is a `challenger` with a tag
that says why. Test metrics are recorded on every version and never decide. Legacy champions (chosen on test by the
old rule) keep their alias, are tagged so, and give way to the first validation-ranked model on the same data."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench.data import load_dataset
from bench.data.loading import splits_fingerprint
from bench.search import make_config
from bench.tracking import model_registry as registry
from bench.tracking import tags as tag

# A champion chosen on validation f1 0.5 (loss 1.2) on split sp-a, with a high test score that must not matter.
TAGS_A = {"dataset_fingerprint": "fp-a", tag.SPLITS_FINGERPRINT: "sp-a", "objective": "val_f1_macro",
          "val_f1_macro": "0.5", "val_loss": "1.2", "test_f1_macro": "0.99", "test_loss": "0.01"}
LEGACY = {"dataset_fingerprint": "fp-a", "test_f1_macro": "0.5", "test_loss": "1.2"}  # the old rule's tags


@pytest.mark.parametrize("objective, value, splits, champion, alias, why", [
    ("val_f1_macro", 0.4, "sp-a", None, "champion", "first registered model"),
    ("val_f1_macro", 0.6, "sp-a", TAGS_A, "champion", "val_f1_macro 0.6000 beats champion's 0.5000 on the same split"),
    ("val_f1_macro", 0.5, "sp-a", TAGS_A, "challenger", "does not beat"),  # a tie keeps the champion
    ("val_f1_macro", 0.4, "sp-a", TAGS_A, "challenger", "val_f1_macro 0.4000 does not beat champion's 0.5000"),
    ("val_f1_macro", 0.9, "sp-b", TAGS_A, "challenger", "split sp-a, this model on sp-b: not comparable"),
    ("val_f1_macro", float("nan"), "sp-a", TAGS_A, "challenger", "no finite val_f1_macro"),
    ("val_loss", 1.0, "sp-a", TAGS_A, "champion", "val_loss 1.0000 beats"),  # a loss: lower is better
    ("val_loss", 1.3, "sp-a", TAGS_A, "challenger", "val_loss 1.3000 does not beat"),
    ("val_accuracy", 0.99, "sp-a", TAGS_A, "challenger", "champion has no val_accuracy (it was chosen on val_f1_macro)"),
    ("val_f1_macro", 0.1, "sp-a", LEGACY, "champion", "legacy champion was chosen on test"),
    ("val_f1_macro", 0.9, "sp-a", {**LEGACY, "dataset_fingerprint": "fp-b"}, "challenger", "not comparable"),
])
def test_decide_moves_the_champion_only_for_a_better_validation_score_on_the_same_split(
        objective: str, value: float, splits: str, champion: dict | None, alias: str, why: str) -> None:
    got_alias, reason = registry.decide(objective, value, splits, "fp-a", champion)
    assert got_alias == alias and why in reason


def test_splits_fingerprint_is_the_actual_assignment_not_the_dataset_fingerprint() -> None:
    splits = pd.DataFrame({"file": ["a.png", "b.png", "c.png"], "class": ["x", "y", "x"], "group": ["", "", ""],
                           "split": ["train", "val", "test"]})
    sha1 = pd.Series(["1", "2", "3"])
    same = splits_fingerprint(splits.iloc[::-1].reset_index(drop=True), sha1.iloc[::-1].reset_index(drop=True))
    assert splits_fingerprint(splits, sha1) == same  # row order does not matter
    moved = splits.assign(split=["train", "test", "val"])
    assert splits_fingerprint(moved, sha1) != same  # one image in another split
    assert splits_fingerprint(splits, pd.Series(["1", "2", "4"])) != same  # other content under the same file name
    assert splits_fingerprint(splits.assign(group=["g", "g", "h"]), sha1) != same

    a, again = load_dataset("synthetic?n_per_class=10"), load_dataset("synthetic?n_per_class=10")
    other_seed = load_dataset("synthetic?n_per_class=10", seed=1)
    assert a.splits_fingerprint == again.splits_fingerprint != other_seed.splits_fingerprint
    assert a.splits_fingerprint != a.fingerprint


def log_tiny_model() -> tuple[str, str]:
    """A real logged serving model in its own run: (run id, model URI)."""
    from bench.models import build_model
    from bench.serving import log_model

    params = {"n_blocks": 1, "filters_1": 4, "batch_norm": False, "dense_layers": 0, "dropout": 0.0}
    model = build_model("scratch_cnn", params, image_size=32, n_classes=3)
    with mlflow.start_run() as run:
        info = log_model(model, class_names=["a", "b", "c"], image_size=32, name="model")
    return run.info.run_id, info.model_uri


def register(c: MlflowClient, run: tuple[str, str], splits: str, val: float, test: float, trial: int,
             fingerprint: str = "fp-a") -> registry.Registered:
    config = make_config(registered_model="tests-model", objective="val_f1_macro", study="reg")
    metrics = {"test_f1_macro": test, "test_accuracy": test + 0.01}
    dataset = SimpleNamespace(fingerprint=fingerprint, splits_fingerprint=splits, name="synthetic")
    return registry.register(c, name=config.registered_model, objective=config.objective, study=config.study_name,
                             run_id=run[0], model_uri=run[1], val_value=val, test_metrics=metrics, trial=trial,
                             dataset=dataset, space="tiny")


def champion_version(c: MlflowClient) -> str:
    return c.get_model_version_by_alias("tests-model", "champion").version


def test_registrations_keep_the_best_validation_champion_and_tag_every_version(tracking: Path) -> None:
    c = MlflowClient()
    runs = [log_tiny_model() for _ in range(4)]

    first = register(c, runs[0], "sp-a", val=0.5, test=0.5, trial=0)
    better_on_test = register(c, runs[1], "sp-a", val=0.4, test=0.95, trial=1)  # worse on validation
    other_split = register(c, runs[2], "sp-b", val=0.9, test=0.9, trial=2)
    assert (first.alias, better_on_test.alias, other_split.alias) == ("champion", "challenger", "challenger")
    assert champion_version(c) == first.version

    better = register(c, runs[3], "sp-a", val=0.7, test=0.3, trial=3)  # better on validation, worse on test
    assert better.alias == "champion" and "val_f1_macro 0.7000 beats champion's 0.5000" in better.reason
    assert champion_version(c) == better.version
    assert c.get_model_version("tests-model", first.version).tags[tag.SUPERSEDED_BY] == str(better.version)

    tags = c.get_model_version("tests-model", better_on_test.version).tags
    assert tags[tag.ALIAS] == "challenger" and "0.4000 does not beat champion's 0.5000" in tags[tag.REASON]
    assert "not comparable" in c.get_model_version("tests-model", other_split.version).tags[tag.REASON]
    for key, value in {"dataset_fingerprint": "fp-a", tag.SPLITS_FINGERPRINT: "sp-a", "data": "synthetic",
                       "space": "tiny", "study": "reg", "trial": "1", "objective": "val_f1_macro",
                       "val_f1_macro": "0.4", tag.CHOSEN_ON: "validation", "test_f1_macro": "0.95"}.items():
        assert tags[key] == value, key
    assert tags["git_commit"] and float(tags["test_accuracy"]) == pytest.approx(0.96)


def test_registering_the_same_run_again_returns_its_version_without_a_duplicate(tracking: Path) -> None:
    c = MlflowClient()
    run = log_tiny_model()
    first = register(c, run, "sp-a", val=0.5, test=0.5, trial=0)
    again = register(c, run, "sp-a", val=0.9, test=0.9, trial=0)
    assert again == registry.Registered(first.version, "champion", "already registered")
    assert len(c.search_model_versions("name='tests-model'")) == 1


def test_legacy_champion_keeps_its_alias_is_tagged_and_gives_way_on_the_same_data(tracking: Path) -> None:
    """Versions registered by the old rule (test objective, no splits fingerprint, no validation value)."""
    c = MlflowClient()
    runs = [log_tiny_model() for _ in range(4)]
    legacy = [mlflow.register_model(run[1], "tests-model", tags={**LEGACY, "test_f1_macro": f1, tag.ALIAS: alias})
              for run, f1, alias in ((runs[0], "0.9", "champion"), (runs[1], "0.3", "challenger"))]
    c.set_registered_model_alias("tests-model", "champion", legacy[0].version)

    elsewhere = register(c, runs[2], "sp-a", val=0.99, test=0.99, trial=0, fingerprint="fp-b")
    assert elsewhere.alias == "challenger" and "not comparable" in elsewhere.reason
    assert champion_version(c) == legacy[0].version  # the legacy champion keeps its alias
    for version in legacy:
        assert c.get_model_version("tests-model", version.version).tags[tag.CHOSEN_ON] == "test (legacy rule)"

    same_data = register(c, runs[3], "sp-a", val=0.2, test=0.2, trial=1)  # worse than its test score: not compared
    assert same_data.alias == "champion" and "legacy champion was chosen on test" in same_data.reason
    assert champion_version(c) == same_data.version
    old = c.get_model_version("tests-model", legacy[0].version).tags
    assert old[tag.SUPERSEDED_BY] == str(same_data.version) and old[tag.CHOSEN_ON] == "test (legacy rule)"
    assert c.get_model_version("tests-model", same_data.version).tags[tag.CHOSEN_ON] == "validation"
