"""Grad-CAM, the galleries and the reliability diagram, on real Keras models and a real MLflow run."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from bench.reporting import insight
from bench.metrics import expected_calibration_error, reliability_bins
from bench.metrics.calibration import N_BINS
from bench.models import build_model
from bench.search import defaults, load_space

CLASSES = ["a", "b", "c", "d"]


def bright_square_model() -> keras.Model:
    """A model whose evidence for class 0 is, by construction, pixel brightness: conv 1×1 (sum of channels) ->
    global average -> two logits (+x, -x). Its Grad-CAM for class 0 must be the brightness map itself."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros", name="brightness")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax", kernel_initializer=keras.initializers.Constant([[1.0, -1.0]]),
                             bias_initializer="zeros")(x)
    return keras.Model(inputs, out)


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


def test_write_insights_makes_png_and_html_twins_fast(tmp_path: Path) -> None:
    """A 16-image gallery of a 64 px scratch CNN, both galleries and the diagram, in under 5 s on CPU."""
    spec = load_space("scratch_cnn")
    model = build_model(spec.family, defaults(spec), image_size=64, n_classes=len(CLASSES), seed=0)
    images = random_images(40, 64)
    y = np.arange(40) % len(CLASSES)
    prob = np.asarray(model(images.astype("float32"), training=False))
    started = time.perf_counter()
    out = insight.write_insights(tmp_path, model, images, y, prob, CLASSES, n_images=16)
    seconds = time.perf_counter() - started
    assert seconds < 5, f"insight took {seconds:.1f}s"
    for name in ("gradcam", "mistakes", "reliability"):
        with Image.open(tmp_path / f"{name}.png") as png:
            assert png.format == "PNG" and png.width > 300
        assert "plotly" in (tmp_path / f"{name}.html").read_text()
    assert out["ece"] == pytest.approx(expected_calibration_error(y, prob))
    assert out["n_mistakes"] == (prob.argmax(axis=1) != y).sum()


def test_log_insights_puts_artifacts_and_ece_on_the_run(tracking: Path) -> None:
    from types import SimpleNamespace

    from bench.tracking import runs as bench_tracking

    c = bench_tracking.client()
    run_id = c.create_run(bench_tracking.experiment_id_for(c, "insight-tests")).info.run_id
    model = bright_square_model()
    images = random_images(12, 16)
    dataset = SimpleNamespace(x_test=images, y_test=np.arange(12) % 2, class_names=["bright", "dark"])
    prob = np.asarray(model(images.astype("float32"), training=False))
    metrics = insight.log_insights(c, run_id, model, dataset, prob, n_images=8)
    logged = {f.path for f in c.list_artifacts(run_id, insight.ARTIFACT_DIR)}
    assert logged == {f"insight/{n}.{ext}" for n in ("gradcam", "mistakes", "reliability") for ext in ("png", "html")}
    assert c.get_run(run_id).data.metrics["test_ece"] == pytest.approx(metrics["test_ece"])
