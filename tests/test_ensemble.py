"""The final fit (bench.search.ensemble): greedy ensemble selection on validation, registered only when it beats the
best trial there; served as one Keras graph through the real pyfunc; test-time augmentation averages the dihedral
copies. Trials here are real MLflow runs with real logged models whose weights are set by hand, so every outcome is
known in advance without training."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import tiny_config

SIZE, CLASSES = 8, ["a", "b", "c"]
# Logits per true class (rows) of two colour-reading models: A confuses c with a, B confuses b with c; each alone
# scores macro-F1 0.556 on validation, their average is right on every image.
LOGITS_A = [[2, 0, 0], [0, 2, 0], [1, 0, 0.8]]
LOGITS_B = [[2, 0, 0], [0, 0.8, 1], [0, 0, 3]]


def colour_model(logits: list[list[float]]):
    """Reads an image's mean colour: a pure red, green or blue image of class k gets softmax(logits[k])."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(len(CLASSES), activation="softmax")
    model = keras.Model(inputs, dense(x))
    dense.set_weights([np.array(logits, dtype=np.float32), np.zeros(len(CLASSES), np.float32)])
    return model


def oriented_model(seed: int):
    """A model that sees where things are (Flatten), with random weights: its output changes under rotation."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(x))


def colour_dataset():
    """Two pure red, green and blue images per split; labels 0, 1, 2."""
    from bench.data import Dataset

    x = np.zeros((6, SIZE, SIZE, 3), np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    x[np.arange(6), :, :, y] = 255
    return Dataset(name="colours", class_names=CLASSES, image_size=SIZE, x_train=x, y_train=y, x_val=x, y_val=y,
                   x_test=x.copy(), y_test=y.copy(), fingerprint="fp-colours", splits=pd.DataFrame(),
                   splits_fingerprint="sp-colours", skipped=pd.DataFrame(), summary="colours")


def served(model_uri: str, pixels: np.ndarray) -> np.ndarray:
    frame = mlflow.pyfunc.load_model(model_uri).predict({"image": pixels.tolist()})
    return frame[[f"prob_{name}" for name in CLASSES]].to_numpy()


def study_of(tmp_path: Path, models: list):
    """A study context whose COMPLETE trials logged `models`, with the validation F1 each scores."""
    from bench import serving, tracking
    from bench.metrics import classification_metrics
    from bench.search.context import SearchContext
    from bench.search.progress import Progress
    from bench.search.space import load_space
    from bench.tracking import tags as tag
    from bench.training import predict_proba

    config, ds, c = tiny_config(tmp_path, study="colours", ensemble=True), colour_dataset(), tracking.client()
    experiment = tracking.experiment_id_for(c, config.experiment)
    tags = {tag.STUDY: config.study_name, tag.OBJECTIVE: config.objective}
    parent = tracking.start_parent(c, experiment, name="colours", resume_run_id=None, tags={**tags, tag.ROLE: tag.PARENT})
    for number, model in enumerate(models):
        run_id = tracking.start_child(c, experiment, parent, name=f"trial-{number}", tags={
            **tags, tag.ROLE: tag.TRIAL_ROLE, tag.TRIAL: str(number), tag.STATE: "COMPLETE"})
        with mlflow.start_run(run_id=run_id, nested=True):
            info = serving.log_model(model, class_names=CLASSES, image_size=SIZE, name="model")
        tracking.log_batch(c, run_id, tags={tag.MODEL_URI: info.model_uri}, metrics=classification_metrics(
            ds.y_val, predict_proba(model, ds.x_val), CLASSES, prefix="val"))
    return SearchContext(config, ds, load_space("scratch_cnn"), c, experiment, parent, Progress(config), tags)


def test_greedy_selection_adds_a_model_only_while_the_bag_scores_better() -> None:
    from bench.search.ensemble import greedy_selection, scorer

    ds = colour_dataset()
    probs = [colour_model(m).predict(ds.x_val, verbose=0) for m in (LOGITS_A, LOGITS_B, LOGITS_A)]
    score = scorer("val_f1_macro", ds.y_val)
    assert score(probs[0]) == score(probs[1]) == pytest.approx(5 / 9)
    assert greedy_selection(probs, score) == [1, 1, 0]  # A, then B (the average is perfect), then nothing better
    assert greedy_selection([probs[0], probs[2]], score) == [1, 0]  # a copy of the best model adds nothing
    loss = scorer("val_loss", ds.y_val)  # a loss is minimised: the sign makes higher better
    assert loss(probs[0]) < 0 and greedy_selection(probs[:2], loss)[1] >= 1


@pytest.mark.parametrize("wins", [True, False])
def test_the_ensemble_is_registered_only_when_it_beats_the_best_trial_on_validation(
        tracking: Path, wins: bool, capsys: pytest.CaptureFixture) -> None:
    from bench.search.finish import finish
    from bench.tracking import tags as tag

    models = [colour_model(LOGITS_A), colour_model(LOGITS_B if wins else LOGITS_A)]
    ctx = study_of(tracking, models)
    result = finish(ctx)
    c = MlflowClient()
    version = c.get_model_version_by_alias("tests-model", "champion")
    parent = c.get_run(ctx.parent_run_id).data.tags
    ensemble = c.get_run(parent[tag.ENSEMBLE_RUN_ID])
    assert ensemble.data.tags[tag.ROLE] == tag.ENSEMBLE_ROLE
    assert ensemble.data.tags[tag.ADOPTED] == str(wins).lower()
    assert ensemble.data.metrics["single_best_val_f1_macro"] == pytest.approx(5 / 9)
    members = json.loads(ensemble.data.tags[tag.MEMBERS])
    out = capsys.readouterr().out
    if wins:
        assert [(m["trial"], m["weight"]) for m in members] == [(0, 0.5), (1, 0.5)]
        assert version.run_id == ensemble.info.run_id and float(version.tags["val_f1_macro"]) == 1.0
        assert parent[tag.CHAMPION_FIT] == "ensemble of trials 0 (0.50), 1 (0.50)" in out
        assert ensemble.data.metrics["test_f1_macro"] == 1.0
        pixels = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3)).astype(np.float32)
        members_mean = np.mean([m.predict(pixels, verbose=0) for m in models], axis=0)
        np.testing.assert_allclose(served(f"models:/tests-model/{version.version}", pixels), members_mean, atol=1e-6)
        finish(ctx)  # resumed with nothing new: the same final fit, no new run, no new version
        assert len(c.search_runs([ctx.experiment_id], tag.run_filter({tag.ROLE: tag.ENSEMBLE_ROLE}))) == 1
        assert len(c.search_model_versions("name='tests-model'")) == 1
    else:
        assert [m["trial"] for m in members] == [0] and "selection kept trial 0 alone" in out
        assert version.run_id == result.best["run_id"] and parent[tag.CHAMPION_FIT] == "trial 0 (already full budget)"
        assert tag.MODEL_URI not in ensemble.data.tags  # not adopted: no model logged


def test_the_served_ensemble_is_the_weighted_mean_of_its_members(tracking: Path) -> None:
    from bench.search.ensemble import ensemble_graph
    from bench.serving import log_model

    members = [oriented_model(1), oriented_model(2), colour_model(LOGITS_B)]
    weights = [0.5, 0.25, 0.25]
    with mlflow.start_run():
        uri = log_model(ensemble_graph(members, weights, SIZE), class_names=CLASSES, image_size=SIZE).model_uri
    pixels = np.random.default_rng(1).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    expected = sum(w * m.predict(pixels, verbose=0) for m, w in zip(members, weights))
    np.testing.assert_allclose(served(uri, pixels), expected, atol=1e-6)


def test_backbone_members_loaded_from_disk_make_an_ensemble_too(tracking: Path, tmp_path: Path) -> None:
    """The backbone family is a Sequential; loaded from a file it has no `input` until called, which the ensemble
    graph once needed (a 60-minute MobileNetV2 search died in its finish on it)."""
    import keras

    from bench.models import build_model
    from bench.search.ensemble import ensemble_graph
    from bench.serving import log_model

    members = []
    for seed in (0, 1):
        built = build_model("backbone", {"backbone": "mobilenet_v2", "input_size": 32, "freeze_fraction": 0.9},
                            image_size=32, n_classes=len(CLASSES), seed=seed, weights="none")
        built.save(tmp_path / f"member{seed}.keras")
        members.append(keras.models.load_model(tmp_path / f"member{seed}.keras"))
    with mlflow.start_run():
        uri = log_model(ensemble_graph(members, [0.75, 0.25], 32), class_names=CLASSES, image_size=32).model_uri
    pixels = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    expected = 0.75 * members[0].predict(pixels, verbose=0) + 0.25 * members[1].predict(pixels, verbose=0)
    np.testing.assert_allclose(served(uri, pixels), expected, atol=1e-5)


def test_tta_serves_the_mean_over_the_eight_dihedral_copies_and_changes_nothing_for_an_invariant_model(
        tracking: Path) -> None:
    from bench.search.ensemble import predict
    from bench.serving import log_model

    pixels = np.random.default_rng(2).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.uint8)
    oriented, invariant = oriented_model(3), colour_model(LOGITS_A)
    copies = [np.rot90(pixels, k, axes=(1, 2))[:, :, ::-1] if mirror else np.rot90(pixels, k, axes=(1, 2))
              for k in range(4) for mirror in (False, True)]
    expected = np.mean([oriented.predict(copy.astype(np.float32), verbose=0) for copy in copies], axis=0)
    plain = oriented.predict(pixels.astype(np.float32), verbose=0)
    assert np.abs(expected - plain).max() > 1e-3  # the copies do differ for this model
    with mlflow.start_run():
        uris = [log_model(m, class_names=CLASSES, image_size=SIZE, tta="d4").model_uri for m in (oriented, invariant)]
    np.testing.assert_allclose(served(uris[0], pixels), expected, atol=1e-6)
    np.testing.assert_allclose(predict(oriented, pixels, "d4"), expected, atol=1e-6)  # evaluation agrees
    np.testing.assert_allclose(served(uris[1], pixels), invariant.predict(pixels.astype(np.float32), verbose=0),
                               atol=1e-6)


@pytest.mark.parametrize("engine", ["optuna", "keras-tuner"])
def test_a_search_with_ensemble_logs_every_complete_trial_and_registers_the_fit_it_names(tracking: Path,
                                                                                         engine: str) -> None:
    from bench import search
    from bench.tracking import tags as tag
    from tests.conftest import children

    result = search.run(tiny_config(tracking, ensemble=True, seed=1, engine=engine, tuner="random"))
    c = MlflowClient()
    trials = [r for r in children(c, result.parent_run_id) if r.data.tags[tag.STATE] == "COMPLETE"]
    assert trials and all(tag.MODEL_URI in r.data.tags for r in trials)  # not only the best-so-far's model
    parent = c.get_run(result.parent_run_id).data.tags
    fit = c.get_run(parent[tag.ENSEMBLE_RUN_ID])
    assert fit.info.status == "FINISHED" and {"val_f1_macro", "test_f1_macro"} <= set(fit.data.metrics)
    version = c.get_model_version_by_alias("tests-model", "champion")
    if fit.data.tags[tag.ADOPTED] == "true":
        assert version.run_id == fit.info.run_id and parent[tag.CHAMPION_FIT].startswith(("ensemble", "trial"))
    else:
        assert version.run_id == result.best["run_id"]
        assert parent[tag.CHAMPION_FIT] == f"trial {result.best['trial']} (already full budget)"  # 1 epoch of 1, all train
