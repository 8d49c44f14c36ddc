"""Model families: one builder per family, called by every engine, reference setup and benchmark contender.

Every model takes raw pixels (float32 0..255, N×S×S×3) and returns softmax probabilities, so that
serving only decodes and resizes. Augmentation layers are inside the model and act in training only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import keras
from keras import layers

from bench.errors import ConfigError

Builder = Callable[..., keras.Model]
_FAMILIES: dict[str, Builder] = {}


@dataclass(frozen=True)
class Phase:
    """One `fit` of a training schedule: `prepare` sets trainable flags before compiling, and
    `learning_rate` (when set) replaces `params["learning_rate"]` for this phase's optimizer."""

    epochs: int
    learning_rate: float | None = None
    prepare: Callable[[keras.Model], None] | None = None
    name: str = "train"


Schedule = Callable[[keras.Model, dict[str, Any], int], list[Phase]]
_SCHEDULES: dict[str, Schedule] = {}
_PRETRAINED: set[str] = set()


def register_family(name: str, *, schedule: Schedule | None = None,
                    pretrained: bool = False) -> Callable[[Builder], Builder]:
    """`schedule(model, params, epochs)` splits training into phases (default: one); a `pretrained`
    family's builder also takes `weights=` (imagenet | none | a path)."""

    def add(builder: Builder) -> Builder:
        _FAMILIES[name] = builder
        if schedule is not None:
            _SCHEDULES[name] = schedule
        if pretrained:
            _PRETRAINED.add(name)
        return builder

    return add


def training_phases(family: str, model: keras.Model, params: dict[str, Any], epochs: int) -> list[Phase]:
    if family in _SCHEDULES:
        return _SCHEDULES[family](model, params, epochs)
    return [Phase(epochs)]


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def build_model(family: str, params: dict[str, Any], *, image_size: int, n_classes: int, seed: int = 0,
                weights: str = "none") -> keras.Model:
    if family not in _FAMILIES:
        raise ConfigError(f"model family '{family}' is not registered; available: {', '.join(list_families())}")
    options = {"weights": weights} if family in _PRETRAINED else {}  # from-scratch families ignore weights
    return _FAMILIES[family](params, image_size=image_size, n_classes=n_classes, seed=seed, **options)


def augmentation(params: dict[str, Any], *, seed: int) -> list[layers.Layer]:
    """Training-only augmentation from the `aug_*` parameters (a no-op at inference)."""
    out: list[layers.Layer] = []
    if params.get("aug_flip", False):
        out.append(layers.RandomFlip("horizontal_and_vertical", seed=seed))
    if params.get("aug_rotation", 0) > 0:
        out.append(layers.RandomRotation(params["aug_rotation"], fill_mode="reflect", seed=seed))
    if params.get("aug_zoom", 0) > 0:
        out.append(layers.RandomZoom(params["aug_zoom"], fill_mode="reflect", seed=seed))
    if params.get("aug_contrast", 0) > 0:
        out.append(layers.RandomContrast(params["aug_contrast"], value_range=(0, 255), seed=seed))
    return out


def head(x: Any, params: dict[str, Any], n_classes: int) -> Any:
    """Dense head: `dense_layers` × Dense(`dense_units_i`)-ReLU-Dropout, then softmax."""
    for i in range(1, int(params.get("dense_layers", 0)) + 1):
        x = layers.Dense(int(params[f"dense_units_{i}"]), activation="relu", name=f"head_dense_{i}")(x)
        if params.get("dropout", 0) > 0:
            x = layers.Dropout(params["dropout"], name=f"head_dropout_{i}")(x)
    if int(params.get("dense_layers", 0)) == 0 and params.get("dropout", 0) > 0:
        x = layers.Dropout(params["dropout"], name="head_dropout")(x)
    return layers.Dense(n_classes, activation="softmax", name="probabilities", dtype="float32")(x)


@register_family("scratch_cnn")
def build_scratch_cnn(params: dict[str, Any], *, image_size: int, n_classes: int, seed: int = 0) -> keras.Model:
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    for layer in augmentation(params, seed=seed):
        x = layer(x)
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)
    kernel = int(params.get("kernel_size", 3))
    use_bn = bool(params.get("batch_norm", True))
    for block in range(1, int(params["n_blocks"]) + 1):
        for conv in range(int(params.get("convs_per_block", 1))):
            x = layers.Conv2D(int(params[f"filters_{block}"]), kernel, padding="same", use_bias=not use_bn,
                              name=f"block{block}_conv{conv + 1}")(x)
            if use_bn:
                # Momentum 0.9, not 0.99: a few hundred steps must be enough for the moving statistics.
                x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv + 1}")(x)
            x = layers.Activation("relu", name=f"block{block}_relu{conv + 1}")(x)
        if x.shape[1] >= 2:
            x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
        if params.get("conv_dropout", 0) > 0:
            x = layers.Dropout(params["conv_dropout"], name=f"block{block}_dropout")(x)
    x = layers.GlobalAveragePooling2D()(x) if params.get("pooling", "global_avg") == "global_avg" else layers.Flatten()(x)
    return keras.Model(inputs, head(x, params, n_classes), name="scratch_cnn")


import bench.backbones  # noqa: E402,F401  (registers the `backbone` family; it imports this module)
