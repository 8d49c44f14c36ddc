"""Champion rules: the `champion` alias moves only to a model that beats it by the study objective on the test
split of the same dataset and split; anything else is a `challenger` with a tag that says why."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bench.tracking import model_registry as registry
from bench.search import make_config

TAGS_A = {"dataset_fingerprint": "fp-a", "test_f1_macro": "0.5", "test_loss": "1.2"}


@pytest.mark.parametrize("objective, value, fingerprint, champion, alias, why", [
    ("val_f1_macro", 0.4, "fp-a", None, "champion", "first registered model"),
    ("val_f1_macro", 0.6, "fp-a", TAGS_A, "champion", "test_f1_macro 0.6000 beats champion's 0.5000"),
    ("val_f1_macro", 0.5, "fp-a", TAGS_A, "challenger", "does not beat"),  # a tie keeps the champion
    ("val_f1_macro", 0.4, "fp-a", TAGS_A, "challenger", "test_f1_macro 0.4000 does not beat champion's 0.5000"),
    ("val_f1_macro", 0.9, "fp-b", TAGS_A, "challenger", "not comparable"),
    ("val_loss", 1.0, "fp-a", TAGS_A, "champion", "test_loss 1.0000 beats"),  # a loss: lower is better
    ("val_loss", 1.3, "fp-a", TAGS_A, "challenger", "test_loss 1.3000 does not beat"),
    ("val_accuracy", 0.3, "fp-a", TAGS_A, "champion", "champion has no test_accuracy"),
])
def test_decide_moves_the_champion_only_for_a_better_model_on_the_same_data(
        objective: str, value: float, fingerprint: str, champion: dict | None, alias: str, why: str) -> None:
    got_alias, reason = registry.decide(objective, value, fingerprint, champion)
    assert got_alias == alias and why in reason


def log_tiny_model() -> tuple[str, str]:
    """A real logged serving model in its own run: (run id, model URI)."""
    from bench.models import build_model
    from bench.serving import log_model

    params = {"n_blocks": 1, "filters_1": 4, "batch_norm": False, "dense_layers": 0, "dropout": 0.0}
    model = build_model("scratch_cnn", params, image_size=32, n_classes=3)
    with mlflow.start_run() as run:
        info = log_model(model, class_names=["a", "b", "c"], image_size=32, name="model")
    return run.info.run_id, info.model_uri


def register(c: MlflowClient, run: tuple[str, str], fingerprint: str, f1: float, trial: int) -> registry.Registered:
    config = make_config(registered_model="tests-model", objective="val_f1_macro", study="reg")
    metrics = {"test_f1_macro": f1, "test_accuracy": f1 + 0.1}
    return registry.register(c, name=config.registered_model, objective=config.objective, study=config.study_name,
                             run_id=run[0], model_uri=run[1], test_metrics=metrics, trial=trial,
                             dataset=SimpleNamespace(fingerprint=fingerprint, name="synthetic"), space="tiny")


def test_registrations_keep_the_best_champion_and_tag_every_version(tracking: Path) -> None:
    c = MlflowClient()
    runs = [log_tiny_model() for _ in range(4)]

    first = register(c, runs[0], "fp-a", 0.5, trial=0)
    worse = register(c, runs[1], "fp-a", 0.4, trial=1)
    other_data = register(c, runs[2], "fp-b", 0.9, trial=2)
    assert (first.alias, worse.alias, other_data.alias) == ("champion", "challenger", "challenger")
    assert c.get_model_version_by_alias("tests-model", "champion").version == first.version

    better = register(c, runs[3], "fp-a", 0.7, trial=3)
    assert better.alias == "champion" and "beats champion's 0.5000" in better.reason
    assert c.get_model_version_by_alias("tests-model", "champion").version == better.version
    assert c.get_model_version("tests-model", first.version).tags["hemabench.superseded_by"] == str(better.version)

    tags = c.get_model_version("tests-model", worse.version).tags
    assert tags["hemabench.alias"] == "challenger" and "does not beat champion's 0.5000" in tags["hemabench.reason"]
    assert "not comparable" in c.get_model_version("tests-model", other_data.version).tags["hemabench.reason"]
    for key, value in {"dataset_fingerprint": "fp-a", "data": "synthetic", "space": "tiny", "study": "reg",
                       "trial": "1", "objective": "val_f1_macro", "test_f1_macro": "0.4"}.items():
        assert tags[key] == value, key
    assert tags["git_commit"] and float(tags["test_accuracy"]) == pytest.approx(0.5)


def test_registering_the_same_run_again_returns_its_version_without_a_duplicate(tracking: Path) -> None:
    c = MlflowClient()
    run = log_tiny_model()
    first = register(c, run, "fp-a", 0.5, trial=0)
    again = register(c, run, "fp-a", 0.9, trial=0)
    assert again == registry.Registered(first.version, "champion", "already registered")
    assert len(c.search_model_versions("name='tests-model'")) == 1
