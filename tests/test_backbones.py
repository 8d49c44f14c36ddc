"""Backbone registry, freeze-depth semantics, the weights options (file, none, imagenet offline) and the
pretrained-beats-random check on the real MobileNetV2 ImageNet file."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from bench.models import backbone
from bench import paths
from bench.models import create_backbone, freeze, list_backbones, schedule
from bench.data import load_dataset
from bench.errors import ConfigError
from bench.models import build_model
from bench.search import defaults, load_space
from bench.training import fit_and_score, start_trial

MOBILENET_FILE = paths.SHARED_DIR / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
needs_mobilenet_file = pytest.mark.skipif(not MOBILENET_FILE.is_file(),
                                          reason=f"MobileNetV2 ImageNet weights not found at {MOBILENET_FILE}")


def small_model(name: str, **params) -> keras.Model:
    start_trial(0)
    values = {**defaults(load_space(name)), "input_size": 32, **params}
    return build_model("backbone", values, image_size=32, n_classes=3, weights="none")


def test_registry_has_the_four_backbones_and_an_unknown_name_lists_them() -> None:
    assert {"mobilenet_v2", "resnet50", "efficientnet_b0", "resnet18"} <= set(list_backbones())
    with pytest.raises(ConfigError, match="unknown backbone 'vgg99'; available: .*mobilenet_v2"):
        create_backbone("vgg99", image_size=32)


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_has_a_search_space_whose_defaults_build_a_raw_pixel_softmax_model(name: str) -> None:
    space = load_space(name)
    assert space.family == "backbone" and defaults(space)["backbone"] == name
    model = small_model(name)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    prob = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")))
    assert np.allclose(prob.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", list_backbones())
def test_freeze_fraction_freezes_that_share_of_backbone_layers_from_the_input_side(name: str) -> None:
    model = small_model(name)
    body = backbone.backbone_layers(backbone.backbone_of(model))
    for fraction in (0.0, 0.25, 0.5, 0.9, 1.0):
        frozen = freeze(model, fraction)
        assert frozen == math.floor(fraction * len(body) + 0.5)
        flags = [layer.trainable for layer in body]
        # Above the cut every layer trains but BatchNorm, which stays in inference mode (bench.models.backbone).
        assert flags == [False] * frozen + [not is_bn(layer) for layer in body[frozen:]]
        assert model.get_layer("head").trainable  # the head always trains
    with pytest.raises(ConfigError, match="'freeze_fraction' parameter must be between 0 and 1. Got 1.5"):
        freeze(model, 1.5)


def is_bn(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def test_fine_tuning_trains_the_unfrozen_convolutions_and_keeps_every_batchnorm_statistic() -> None:
    model = small_model("mobilenet_v2", freeze_fraction=0.5)
    body = backbone.backbone_layers(backbone.backbone_of(model))
    bns = [layer for layer in body if is_bn(layer)]
    live_conv = next(layer for layer in reversed(body) if layer.trainable and layer.trainable_weights)
    before = [np.array(b.moving_mean) for b in bns], [np.array(w) for w in live_conv.trainable_weights]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)  # no graph tracing
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"), rng.integers(0, 3, 8))
    assert all(np.array_equal(np.array(b.moving_mean), m) for b, m in zip(bns, before[0]))  # above the cut too
    assert not all(np.array_equal(np.array(w), v) for w, v in zip(live_conv.trainable_weights, before[1]))


def test_schedule_is_head_only_when_fully_frozen_and_warmup_then_finetune_when_two_phase() -> None:
    model = small_model("mobilenet_v2")
    head_only = schedule(model, {"freeze_fraction": 1.0, "head_learning_rate": 1e-3}, 6)
    assert [(p.name, p.epochs, p.learning_rate) for p in head_only] == [("head", 6, 1e-3)]
    params = {"freeze_fraction": 0.8, "two_phase": True, "warmup_epochs": 2, "head_learning_rate": 1e-3,
              "finetune_learning_rate": 1e-5}
    phases = schedule(model, params, 6)
    assert [(p.name, p.epochs, p.learning_rate) for p in phases] == [("warmup", 2, 1e-3), ("finetune", 4, 1e-5)]
    body = backbone.backbone_layers(backbone.backbone_of(model))
    phases[0].prepare(model)
    assert not any(layer.trainable for layer in body)
    phases[1].prepare(model)
    cut = math.floor(0.8 * len(body) + 0.5)
    assert [layer.trainable for layer in body] == [False] * cut + [not is_bn(layer) for layer in body[cut:]]
    one = schedule(model, {**params, "two_phase": False}, 6)
    assert [(p.name, p.epochs, p.learning_rate) for p in one] == [("finetune", 6, 1e-5)]


def test_bad_weights_values_fail_with_one_line_naming_the_rule(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'weights' parameter must be imagenet, none or a path .* Got 'nope.h5'"):
        create_backbone("mobilenet_v2", image_size=32, weights="nope.h5")
    with pytest.raises(ConfigError, match="backbone 'resnet18' has no ImageNet weights .*weights=none"):
        create_backbone("resnet18", image_size=32, weights="imagenet")
    with pytest.raises(ConfigError, match="needs input_size >= 32; got 16"):
        create_backbone("mobilenet_v2", image_size=16)


def test_imagenet_offline_names_the_file_keras_wanted_and_the_alternatives(tmp_path, monkeypatch) -> None:
    # An empty Keras cache, so Keras must download; the download fails as it does offline (DNS lookup fails),
    # whatever this machine's network: Keras's own get_file turns the URLError into its "URL fetch failure".
    import socket
    import urllib.error

    import keras.src.backend.config as keras_config
    from keras.src.utils import file_utils

    asked = []

    def offline(url, *args, **kwargs):
        asked.append(url)
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))  # Keras reads KERAS_HOME at import only
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    with pytest.raises(ConfigError) as info:
        create_backbone("mobilenet_v2", image_size=96, weights="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in message
    assert "weights=none" in message and "KERAS_HOME" in message
    assert len(asked) == 1 and asked[0] in message  # the fake answered, not this machine's network


@needs_mobilenet_file
def test_weights_file_loads_into_mobilenet_at_any_input_size() -> None:
    import h5py

    with h5py.File(MOBILENET_FILE, "r") as f:
        stored = np.array(f["Conv1"]["Conv1"]["kernel"])
    for size in (64, 96):
        backbone = create_backbone("mobilenet_v2", image_size=size, weights=str(MOBILENET_FILE))
        assert np.array_equal(backbone.get_layer("Conv1").get_weights()[0], stored)
    random = create_backbone("mobilenet_v2", image_size=64, weights="none")
    assert not np.array_equal(random.get_layer("Conv1").get_weights()[0], stored)


@needs_mobilenet_file
def test_a_weights_file_for_another_architecture_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=f"weights file {MOBILENET_FILE} does not fit backbone 'resnet18'"):
        create_backbone("resnet18", image_size=32, weights=str(MOBILENET_FILE))


@needs_mobilenet_file
def test_frozen_pretrained_mobilenet_beats_the_same_backbone_with_random_weights() -> None:
    dataset = load_dataset("synthetic?n_per_class=32", image_size=64, seed=0)
    params = {**defaults(load_space("mobilenet_v2")), "input_size": 64, "freeze_fraction": 1.0,
              "head_learning_rate": 3e-3, "dense_layers": 0, "dropout": 0.0, "batch_size": 32}
    scores = {}
    for weights in (str(MOBILENET_FILE), "none"):
        start_trial(0)
        fit = fit_and_score(params, dataset, family="backbone", epochs=5, seed=0, weights=weights,
                            objective="val_accuracy")
        scores[weights] = fit.best_value
    chance = 1 / len(dataset.class_names)
    assert scores[str(MOBILENET_FILE)] > max(0.5, scores["none"] + 0.25, chance + 0.3), scores
