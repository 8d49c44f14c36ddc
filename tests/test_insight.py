"""Grad-CAM, the galleries and the reliability diagram, on real Keras models and a real MLflow run."""

from __future__ import annotations

import time
import types
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from bench.reporting import insight
from bench.metrics import expected_calibration_error, reliability_bins
from bench.metrics.calibration import N_BINS
from bench.models import build_model
from bench.search import defaults, load_space

CLASSES = ["a", "b", "c", "d"]


def bright_square_model(scale: float = 1.0) -> keras.Model:
    """A model whose evidence for class 0 is, by construction, pixel brightness: conv 1×1 (sum of channels) ->
    global average -> two logits (+x, -x) times `scale`. Its Grad-CAM for class 0 must be the brightness map itself."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros", name="brightness")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="probabilities",
                             kernel_initializer=keras.initializers.Constant([[scale, -scale]]), bias_initializer="zeros")(x)
    return keras.Model(inputs, out)


def red_green_model() -> keras.Model:
    """Red pixels are evidence for class 0, green ones for class 1 (and against the other): conv 1×1 (red, green)
    -> global average -> Dense softmax. The discriminative region of an image is where its colour squares are."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    colours = keras.initializers.Constant([[[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]])
    x = keras.layers.Conv2D(2, 1, kernel_initializer=colours, bias_initializer="zeros", name="colours")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="probabilities",
                             kernel_initializer=keras.initializers.Constant([[4.0, -4.0], [-4.0, 4.0]]))(x)
    return keras.Model(inputs, out)


def softmax_gradient_cam(model: keras.Model, images: np.ndarray, cls: int) -> np.ndarray:
    """The map the old Grad-CAM drew (gradient of the softmax probability), unscaled, at the feature-map size."""
    layer = insight.feature_layer(model)
    sub = keras.Model(model.inputs[0], [layer.output, model.outputs[0]])
    with tf.GradientTape() as tape:
        features, prob = sub(tf.convert_to_tensor(images, tf.float32), training=False)
        score = prob[:, cls]
    weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_grad_cam_is_hot_where_the_evidence_is() -> None:
    images = np.zeros((2, 16, 16, 3), np.uint8)
    images[0, :5, :5] = 255  # top-left
    images[1, 10:, 10:] = 255  # bottom-right
    heat, prob = insight.grad_cam(bright_square_model(), images, np.array([0, 0]))
    assert heat.shape == (2, 16, 16) and prob.shape == (2, 2)
    assert heat.min() >= 0 and heat.max() <= 1
    assert heat[0, :4, :4].mean() > 0.9 and heat[0, 8:, 8:].max() < 0.1
    assert heat[1, 11:, 11:].mean() > 0.9 and heat[1, :8, :8].max() < 0.1


def test_grad_cam_moves_when_the_discriminative_region_is_occluded() -> None:
    image = np.zeros((1, 16, 16, 3), np.uint8)
    image[0, :6, :6, 0] = 255  # a red square top-left: class 0's evidence, the larger one
    image[0, 12:, 12:, 1] = 255  # a green square bottom-right: class 1's evidence
    occluded = image.copy()
    occluded[0, :6, :6] = 0
    heat, prob = insight.grad_cam(red_green_model(), np.concatenate([image, occluded]))
    assert list(prob.argmax(axis=1)) == [0, 1]
    assert heat[0, :5, :5].mean() > 0.9 and heat[0, 11:, 11:].max() < 0.1  # class 0, on the red square
    assert heat[1, 13:, 13:].mean() > 0.9 and heat[1, :5, :5].max() < 0.1  # the peak moved to the green square
    peaks = [np.unravel_index(h.argmax(), h.shape) for h in heat]
    assert peaks[0][0] < 6 and peaks[0][1] < 6 and peaks[1][0] >= 12 and peaks[1][1] >= 12
    class_0 = insight.grad_cam(red_green_model(), occluded, np.array([0]))[0]
    assert class_0[0, :6, :6].max() == 0  # class 0's heat on the occluded region is gone


def test_grad_cam_of_the_logit_survives_a_saturated_softmax() -> None:
    """With p = 1.0 in float32 the softmax gradient is exactly 0 everywhere; the logit's gradient is not."""
    model = bright_square_model(scale=500.0)
    images = np.zeros((1, 16, 16, 3), np.uint8)
    images[0, :5, :5] = 255
    heat, prob = insight.grad_cam(model, images, np.array([0]))
    assert prob[0, 0] == 1.0
    assert softmax_gradient_cam(model, images, 0).max() == 0
    assert heat[0, :4, :4].mean() > 0.9 and heat[0, 8:, 8:].max() < 0.1


@pytest.mark.parametrize("space", ["scratch_cnn", "resnet18"])
def test_feature_layer_and_grad_cam_for_each_family(space: str) -> None:
    """The scratch CNN's last conv block; for the backbone family the nested backbone model itself."""
    spec = load_space(space)
    model = build_model(spec.family, defaults(spec), image_size=32, n_classes=len(CLASSES), seed=0)
    layer = insight.feature_layer(model)
    if spec.family == "backbone":
        assert isinstance(layer, keras.Model)
    else:
        assert layer.name.startswith(f"block{defaults(spec)['n_blocks']}_")
    images = random_images(3, 32)
    heat, prob = insight.grad_cam(model, images)
    assert heat.shape == (3, 32, 32) and np.isfinite(heat).all() and heat.max() <= 1
    np.testing.assert_allclose(prob, model(images.astype("float32"), training=False), atol=1e-5)


def test_a_model_without_a_feature_map_is_refused_in_one_line() -> None:
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)), name="flat")
    with pytest.raises(insight.BenchError, match="model 'flat' has no 4-D feature map"):
        insight.feature_layer(model)
    conv = keras.layers.Conv2D(2, 3)(inputs)
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.GlobalAveragePooling2D()(conv)), name="no_head")
    with pytest.raises(insight.BenchError, match="model 'no_head' does not end in a Dense layer"):
        insight.grad_cam(model, random_images(1, 8))


def test_gallery_takes_every_class_round_robin() -> None:
    y = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    picked = insight.gallery_indices(y, 6)
    assert list(y[picked]) == [0, 1, 2, 3, 0, 1]
    assert len(insight.gallery_indices(y, 50)) == len(y)


def test_confident_mistakes_are_wrong_and_most_confident_first() -> None:
    y = np.array([0, 1, 1, 0])
    prob = np.array([[0.9, 0.1], [0.6, 0.4], [0.95, 0.05], [0.2, 0.8]])
    assert list(insight.confident_mistakes(y, prob, 5)) == [2, 3, 1]
    assert list(insight.confident_mistakes(y, prob, 1)) == [2]


def test_ece_known_values_and_reliability_bins_agree_with_it() -> None:
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.array([[0.9, 0.1]] * 2 + [[0.1, 0.9]] * 2)) == pytest.approx(0.1)
    rng = np.random.default_rng(1)
    prob = rng.dirichlet(np.ones(4), 300)
    y = rng.integers(0, 4, 300)
    bins = reliability_bins(y, prob)
    filled = bins["count"] > 0
    from_bins = float((bins["count"][filled] * np.abs(bins["accuracy"][filled] - bins["confidence"][filled])).sum() / 300)
    assert bins["count"].sum() == 300
    assert from_bins == pytest.approx(expected_calibration_error(y, prob, n_bins=N_BINS))


def test_write_insights_makes_png_and_html_twins(tmp_path: Path) -> None:
    """A 16-image gallery of a 64 px scratch CNN, both galleries and the diagram. The time is printed, not asserted:
    a test asserts behaviour; under a parallel suite on 2 cores a wall-clock bound measures the neighbours."""
    spec = load_space("scratch_cnn")
    model = build_model(spec.family, defaults(spec), image_size=64, n_classes=len(CLASSES), seed=0)
    images = random_images(40, 64)
    y = np.arange(40) % len(CLASSES)
    prob = np.asarray(model(images.astype("float32"), training=False))
    started = time.perf_counter()
    out = insight.write_insights(tmp_path, model, images, y, prob, CLASSES, n_images=16)
    seconds = time.perf_counter() - started
    print(f"insight: {seconds:.1f} s")
    for name in ("gradcam", "mistakes", "reliability"):
        with Image.open(tmp_path / f"{name}.png") as png:
            assert png.format == "PNG" and png.width > 300
        assert "plotly" in (tmp_path / f"{name}.html").read_text()
    assert out["ece"] == pytest.approx(expected_calibration_error(y, prob))
    assert out["n_mistakes"] == (prob.argmax(axis=1) != y).sum()


def insight_run():
    """A client and a new run of the "insight-tests" experiment in the test's store."""
    from bench.tracking import runs as bench_tracking

    c = bench_tracking.client()
    return c, c.create_run(bench_tracking.experiment_id_for(c, "insight-tests")).info.run_id


def test_log_insights_puts_artifacts_and_ece_on_the_run(tracking: Path) -> None:
    c, run_id = insight_run()
    model = bright_square_model()
    images = random_images(12, 16)
    dataset = types.SimpleNamespace(x_test=images, y_test=np.arange(12) % 2, class_names=["bright", "dark"])
    prob = np.asarray(model(images.astype("float32"), training=False))
    metrics = insight.log_insights(c, run_id, model, dataset, prob, n_images=8)
    logged = {f.path for f in c.list_artifacts(run_id, insight.ARTIFACT_DIR)}
    assert logged == {f"insight/{n}.{ext}" for n in ("gradcam", "mistakes", "reliability") for ext in ("png", "html")}
    assert c.get_run(run_id).data.metrics["test_ece"] == pytest.approx(metrics["test_ece"])


def test_log_insights_adds_the_mistakes_by_source_group_when_test_has_groups(tracking: Path, capsys) -> None:
    c, run_id = insight_run()
    model = bright_square_model()
    images = random_images(12, 16)
    prob = np.asarray(model(images.astype("float32"), training=False))
    y = prob.argmax(axis=1).copy()
    y[:4] = 1 - y[:4]  # the 4 images of source "s0" are all wrong
    groups = np.array(["s0"] * 4 + ["s1"] * 8)
    dataset = types.SimpleNamespace(x_test=images, y_test=y, class_names=["bright", "dark"], groups_test=groups)
    insight.log_insights(c, run_id, model, dataset, prob, n_images=8)
    assert "insight/test_groups.csv" in {f.path for f in c.list_artifacts(run_id, insight.ARTIFACT_DIR)}
    table = pd.read_csv(c.download_artifacts(run_id, "insight/test_groups.csv"))
    assert table.loc[0, "group"] == "s0" and table.loc[0, "points_lost"] == pytest.approx(4 / 12)
    assert table["points_lost"].sum() == pytest.approx(4 / 12)
    assert "s0 (4 images, accuracy 0.000), costs 33.3 accuracy points" in capsys.readouterr().out
