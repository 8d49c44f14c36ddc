"""The training recipe: cosine learning rate with warm-up, label smoothing, and augmentation for stained smears
that changes nothing at inference."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data import load_dataset
from bench.models import build_model
from bench.search.space import defaults, load_space
from bench.errors import ConfigError
from bench.training import batches, fit_and_score, make_optimizer, predict_proba, start_trial
from bench.training.fit import learning_rate
from tests.conftest import TINY_DATA

BASE = {"n_blocks": 2, "filters_1": 8, "filters_2": 8, "learning_rate": 1e-3, "batch_size": 16}
NEW_AUGMENTATION = {"aug_flip": True, "aug_translate": 0.1, "aug_stain": 0.2}


@pytest.mark.parametrize("family, params", [
    ("scratch_cnn", BASE),
    ("backbone", {"backbone": "resnet18", "augment": True, "freeze_fraction": 0.0, "dense_layers": 0}),
])
def test_each_new_augmentation_is_a_no_op_at_inference(family: str, params: dict) -> None:
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    plain = build_model(family, params, image_size=32, n_classes=3, seed=0)
    for name, value in NEW_AUGMENTATION.items():
        augmented = build_model(family, {**params, name: value}, image_size=32, n_classes=3, seed=0)
        assert len(augmented.layers) > len(plain.layers)
        augmented.set_weights(plain.get_weights())
        np.testing.assert_array_equal(augmented(x, training=False), plain(x, training=False), err_msg=name)
        assert not np.allclose(augmented(x, training=True), plain(x, training=True)), name  # it does act in training


def test_rot90_turns_training_images_by_multiples_of_90_degrees_and_keeps_labels(capfd: pytest.CaptureFixture) -> None:
    x = np.arange(50 * 4 * 4 * 3, dtype=np.uint8).reshape(50, 4, 4, 3)
    images, labels = next(iter(batches(x, np.arange(50), batch_size=50, seed=0, shuffle=False, rot90=True)))
    assert "DT_UINT8" not in capfd.readouterr().err  # no oneDNN notice on the user's screen
    turns = [next(k for k in range(4) if np.array_equal(np.rot90(x[i], k), images[i])) for i in range(50)]
    assert set(turns) == {0, 1, 2, 3} and list(labels.numpy()) == list(range(50))


def test_rot90_turns_are_the_same_for_one_seed_and_new_each_epoch() -> None:
    x = np.random.default_rng(0).integers(0, 255, (400, 4, 4, 3), dtype=np.uint8)

    def turns() -> list[np.ndarray]:  # per epoch, the turn of each image in index order
        pipeline = batches(x, np.arange(400), batch_size=50, seed=0, shuffle=True, rot90=True)
        epochs = []
        for _ in range(2):
            turn = np.empty(400, int)
            for images, labels in pipeline:
                for image, i in zip(images.numpy().astype(np.uint8), labels.numpy()):
                    turn[i] = next(k for k in range(4) if np.array_equal(np.rot90(x[i], k), image))
            epochs.append(turn)
        return epochs

    first, again = turns(), turns()
    np.testing.assert_array_equal(first, again)  # was ~45 % different: a random op inside a parallel map
    assert (first[0] != first[1]).mean() > 0.5


def test_mixup_blends_pairs_of_images_and_their_labels_the_same_for_one_seed() -> None:
    # Each class's images are one constant (60 x class), so a blend of classes c1, c2 with weight w has the mean
    # 60 (w c1 + (1 - w) c2) = 60 x (label row . class numbers).
    y = np.arange(64) % 4
    x = np.broadcast_to((60 * y).astype(np.uint8)[:, None, None, None], (64, 4, 4, 3)).copy()

    def blended() -> tuple[np.ndarray, np.ndarray]:
        images, labels = next(iter(batches(x, y, batch_size=64, seed=0, shuffle=True, one_hot=4, mixup=0.4)))
        return images.numpy(), labels.numpy()

    images, labels = blended()
    np.testing.assert_allclose(labels.sum(axis=1), 1, atol=1e-6)
    # Beta(0.4, 0.4) draws most weights near 0 or 1, and a quarter of the pairs share a class: still, many blend
    assert ((labels > 0.05) & (labels < 0.95)).any(axis=1).mean() > 0.25
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 60 * labels @ np.arange(4), atol=0.5)
    again = blended()
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[1], labels)
    with pytest.raises(ValueError, match="one_hot"):
        batches(x, y, batch_size=64, seed=0, shuffle=True, mixup=0.4)


def test_mixup_lives_in_the_input_pipeline_so_the_model_is_unchanged() -> None:
    plain = build_model("scratch_cnn", BASE, image_size=32, n_classes=3, seed=0)
    mixed = build_model("scratch_cnn", {**BASE, "aug_mixup": 0.2}, image_size=32, n_classes=3, seed=0)
    assert [type(layer) for layer in mixed.layers] == [type(layer) for layer in plain.layers]


def test_a_fit_with_the_whole_default_recipe_is_reproducible() -> None:
    tiny = load_dataset(TINY_DATA, image_size=32, seed=0)
    params = {**defaults(load_space("scratch_cnn")), "batch_size": 8}
    fits = []
    for _ in range(2):
        start_trial(0)
        fits.append(fit_and_score(params, tiny, family="scratch_cnn", epochs=2, seed=0))
    assert fits[0].history == fits[1].history
    for a, b in zip(fits[0].model.get_weights(), fits[1].model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    schedule = learning_rate({"lr_schedule": "cosine", "lr_warmup_epochs": 1}, 0.01, steps_per_epoch=10, epochs=5)
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(0.005) and rates[2] == pytest.approx(0.01)
    assert rates[2] > rates[3] > rates[4] == pytest.approx(0.0, abs=1e-9)
    assert learning_rate({}, 0.01, steps_per_epoch=10, epochs=5) == 0.01


def test_the_whole_recipe_trains_and_the_model_still_predicts_raw_pixels() -> None:
    tiny = load_dataset(TINY_DATA, image_size=32, seed=0)
    params = {**BASE, **NEW_AUGMENTATION, "aug_rot90": True, "lr_schedule": "cosine", "lr_warmup_epochs": 0.5,
              "label_smoothing": 0.1, "optimizer": "adamw", "weight_decay": 1e-4, "class_weight": "balanced",
              "aug_mixup": 0.2}
    fit = fit_and_score(params, tiny, family="scratch_cnn", epochs=2, seed=0)
    assert len(fit.history) == 2 and np.isfinite(fit.history[-1]["loss"]) and 0 <= fit.history[-1]["accuracy"] <= 1
    assert fit.model.output_shape[-1] == len(tiny.class_names)


@pytest.mark.parametrize("family, params", [
    ("scratch_cnn", {**BASE, "batch_size": 4}),
    # Frozen prefix: the cached-features route trains a suffix model that shares the full model's variables.
    ("backbone", {"backbone": "resnet18", "freeze_fraction": 0.6, "dense_layers": 0, "learning_rate": 1e-2,
                  "batch_size": 4}),
])
def test_ema_keeps_and_scores_the_averaged_weights(family: str, params: dict) -> None:
    tiny = load_dataset(TINY_DATA, image_size=32, seed=0)
    start_trial(0)
    start = build_model(family, params, image_size=32, n_classes=len(tiny.class_names), seed=0)
    initial = [v.numpy() for v in start.trainable_variables]  # BatchNorm's statistics are not averaged

    def moved(fit) -> float:  # how far training took the trainable weights from where they started
        return sum(float(np.abs(v.numpy() - w).sum()) for v, w in zip(fit.model.trainable_variables, initial))

    start_trial(0)
    plain = fit_and_score(params, tiny, family=family, epochs=3, seed=0)
    # An average over ~1e6 steps barely leaves the first of the 36 steps' weights.
    start_trial(0)
    averaged = fit_and_score({**params, "ema_momentum": 0.999999}, tiny, family=family, epochs=3, seed=0)
    assert 0 < moved(averaged) < 0.3 * moved(plain)
    # Training itself runs on the raw weights, swapped back in after each epoch's scoring.
    assert [row["loss"] for row in averaged.history] == pytest.approx([row["loss"] for row in plain.history])
    # What was scored is what was kept.
    np.testing.assert_allclose(predict_proba(averaged.model, tiny.x_val), averaged.val_prob, atol=1e-5)


def test_ema_momentum_outside_0_1_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="ema_momentum must be in"):
        make_optimizer({"learning_rate": 1e-3, "ema_momentum": 1.0})
