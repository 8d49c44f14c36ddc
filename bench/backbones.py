"""Pretrained backbones: a registry of builders, each with its preprocessing, and the `backbone` model family.

Adding a backbone is one `@register_backbone` builder here plus one `search_spaces/<name>.yaml`.

The family's model is a `keras.Sequential` chain, raw 0..255 pixels in, softmax out::

    image (dataset size) -> [augmentation] -> [Resizing to input_size] -> preprocessing -> backbone -> pooling -> head

A chain lets `bench.features` cut it at the end of the frozen prefix and cache that prefix's outputs.

Freeze depth: `freeze_fraction` of the backbone's layers (InputLayer excluded, in topological order, so from
the input side) get `trainable=False`. Keras 3 runs a non-trainable BatchNormalization layer in inference
mode (moving statistics, never updated), so frozen BatchNorm layers stay in inference mode while the
unfrozen ones above them train normally, without a `training=False` call that would also freeze the
unfrozen ones' statistics.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
from keras import layers

from bench.errors import ConfigError
from bench.models import Phase, augmentation, head, register_family

BackboneBuilder = Callable[[int, "str | None"], keras.Model]
"""(input_size, "imagenet" | None) -> a headless backbone taking the output of its preprocessing."""
Preprocess = Callable[[], list[layers.Layer]]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: BackboneBuilder
    preprocess: Preprocess  # raw 0..255 RGB -> what `build`'s network expects
    imagenet: bool  # keras.applications can download ImageNet weights for it
    min_size: int = 32


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *, preprocess: Preprocess, imagenet: bool = True,
                      min_size: int = 32) -> Callable[[BackboneBuilder], BackboneBuilder]:
    def add(build: BackboneBuilder) -> BackboneBuilder:
        _BACKBONES[name] = BackboneSpec(name, build, preprocess, imagenet, min_size)
        return build

    return add


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    if name not in _BACKBONES:
        raise ConfigError(f"backbone '{name}' is not registered; available: {', '.join(list_backbones())}")
    return _BACKBONES[name]


# --- preprocessing: built-in layers only, so a saved model loads (and serves) without project code ---

def scale_to_unit_range() -> list[layers.Layer]:
    """keras.applications 'tf' mode: x / 127.5 - 1."""
    return [layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_scale")]


_CAFFE_MEAN_BGR = [103.939, 116.779, 123.68]


def caffe_bgr_mean() -> list[layers.Layer]:
    """keras.applications 'caffe' mode (ResNet50): RGB -> BGR, minus the ImageNet mean; a fixed 1×1 map."""
    flip = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    return [layers.Dense(3, trainable=False, name="preprocess_bgr_mean",
                         kernel_initializer=keras.initializers.Constant(flip),
                         bias_initializer=keras.initializers.Constant([-m for m in _CAFFE_MEAN_BGR]))]


def inside_network() -> list[layers.Layer]:
    """EfficientNet rescales and normalises inside the network: it takes 0..255 as is."""
    return []


# --- builders ---

@register_backbone("mobilenet_v2", preprocess=scale_to_unit_range)
def mobilenet_v2(size: int, weights: str | None) -> keras.Model:
    return keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=weights)


@register_backbone("resnet50", preprocess=caffe_bgr_mean)
def resnet50(size: int, weights: str | None) -> keras.Model:
    return keras.applications.ResNet50(input_shape=(size, size, 3), include_top=False, weights=weights)


@register_backbone("efficientnet_b0", preprocess=inside_network)
def efficientnet_b0(size: int, weights: str | None) -> keras.Model:
    return keras.applications.EfficientNetB0(input_shape=(size, size, 3), include_top=False, weights=weights)


@register_backbone("resnet18", preprocess=scale_to_unit_range, imagenet=False, min_size=32)
def resnet18(size: int, weights: str | None) -> keras.Model:
    """ResNet-18 (He et al. 2016, basic blocks [2, 2, 2, 2]); Keras has none, so it only trains from scratch or
    from a weights file saved from this same builder."""
    inputs = keras.Input((size, size, 3), name="resnet18_input")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, filters in enumerate((64, 128, 256, 512), start=2):
        for block in (1, 2):
            stride = 2 if stage > 2 and block == 1 else 1
            x = _basic_block(x, filters, stride, name=f"conv{stage}_block{block}")
    return keras.Model(inputs, x, name="resnet18")


def _basic_block(x: Any, filters: int, stride: int, *, name: str) -> Any:
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_0_bn")(shortcut)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_1_conv")(x)
    y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_2_bn")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


# --- weights ---

def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _imagenet(spec: BackboneSpec, size: int) -> keras.Model:
    if not spec.imagenet:
        raise ConfigError(f"backbone '{spec.name}' has no ImageNet weights in keras.applications; "
                          "use weights=none or a path to a weights file")
    try:
        return spec.build(size, "imagenet")
    except Exception as exc:  # keras.utils.get_file raises a bare Exception("URL fetch failure on <url>: ...")
        found = re.search(r"URL fetch failure on (\S+?):? ", str(exc))
        if found is None:
            raise
        url = found.group(1)
        raise ConfigError(
            f"weights=imagenet: Keras could not download {url.rsplit('/', 1)[-1]} ({url}) into its cache "
            f"(KERAS_HOME/models, default ~/.keras/models; offline?); use weights=none, weights=<path to that "
            f"file>, or put the file in KERAS_HOME/models") from None


def _from_file(spec: BackboneSpec, size: int, path: Path) -> keras.Model:
    model = spec.build(size, None)
    try:
        model.load_weights(str(path))
    except Exception as exc:  # noqa: BLE001 - any reader error means the file does not fit this backbone
        raise ConfigError(f"weights file {path} does not fit backbone '{spec.name}': {_one_line(exc)}") from None
    return model


def create_backbone(name: str, *, image_size: int, weights: str = "none") -> keras.Model:
    """The headless backbone `name` for `image_size` inputs (after its preprocessing), named "backbone".

    `weights`: "imagenet" (downloaded once into the Keras cache), "none" (random, seeded by the Keras
    global seed), or a path to a weights file (legacy `.h5` or `.weights.h5`) for this architecture."""
    spec = backbone_spec(name)
    if image_size < spec.min_size:
        raise ConfigError(f"backbone '{name}' needs input_size >= {spec.min_size}; got {image_size}")
    if weights == "none":
        built = spec.build(image_size, None)
    elif weights == "imagenet":
        built = _imagenet(spec, image_size)
    elif Path(weights).is_file():
        built = _from_file(spec, image_size, Path(weights))
    else:
        raise ConfigError(f"The 'weights' parameter must be imagenet, none or a path to a weights file. "
                          f"Got {weights!r} instead (no such file).")
    # Re-wrapped under a fixed name (same layers, same weights) so that the family can find it in its chain.
    return keras.Model(built.input, built.output, name="backbone")


# --- freeze depth ---

def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer("backbone")


def backbone_layers(backbone: keras.Model) -> list[layers.Layer]:
    return [layer for layer in backbone.layers if not isinstance(layer, layers.InputLayer)]


def freeze(model: keras.Model, fraction: float) -> int:
    """Freeze the first round(fraction × n) of the backbone's n layers (input side); returns that count."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"The 'freeze_fraction' parameter must be between 0 and 1. Got {fraction!r} instead.")
    backbone = backbone_of(model)
    body = backbone_layers(backbone)
    frozen = math.floor(fraction * len(body) + 0.5)
    backbone.trainable = True
    for i, layer in enumerate(body):
        layer.trainable = i >= frozen
    return frozen


def schedule(model: keras.Model, params: dict[str, Any], epochs: int) -> list[Phase]:
    """Head only (fully frozen) at `head_learning_rate`; otherwise fine-tune to the sampled depth at
    `finetune_learning_rate`, after `warmup_epochs` of head-only training when `two_phase`."""
    depth = float(params.get("freeze_fraction", 1.0))
    head_lr = float(params.get("head_learning_rate", 1e-3))
    head_only = Phase(epochs, head_lr, lambda m: freeze(m, 1.0), "head")
    if depth >= 1.0:
        return [head_only]
    finetune_lr = float(params.get("finetune_learning_rate", 1e-4))
    if params.get("two_phase", False) and epochs > 1:
        warmup = max(1, min(int(params.get("warmup_epochs", 1)), epochs - 1))
        return [Phase(warmup, head_lr, lambda m: freeze(m, 1.0), "warmup"),
                Phase(epochs - warmup, finetune_lr, lambda m: freeze(m, depth), "finetune")]
    return [Phase(epochs, finetune_lr, lambda m: freeze(m, depth), "finetune")]


_POOLING: dict[str, Callable[[], layers.Layer]] = {
    "avg": lambda: layers.GlobalAveragePooling2D(name="pool"),
    "max": lambda: layers.GlobalMaxPooling2D(name="pool"),
}


@register_family("backbone", schedule=schedule, pretrained=True)
def build_backbone_model(params: dict[str, Any], *, image_size: int, n_classes: int, seed: int = 0,
                         weights: str = "none") -> keras.Model:
    """`params["backbone"]` names the registry entry; see the module docstring for the chain."""
    if "backbone" not in params:
        raise ConfigError(f"the backbone family needs a 'backbone' parameter (one of {', '.join(list_backbones())})")
    spec = backbone_spec(str(params["backbone"]))
    input_size = int(params.get("input_size", image_size))
    pooling = params.get("pooling", "avg")
    if pooling not in _POOLING:
        raise ConfigError(f"The 'pooling' parameter must be one of {sorted(_POOLING)}. Got {pooling!r} instead.")
    backbone = create_backbone(spec.name, image_size=input_size, weights=weights)
    chain: list[layers.Layer] = [keras.Input((image_size, image_size, 3), name="image")]
    if params.get("augment", False):
        chain += augmentation(params, seed=seed)
    if input_size != image_size:
        chain.append(layers.Resizing(input_size, input_size, interpolation="bilinear", name="resize"))
    chain += spec.preprocess()
    chain += [backbone, _POOLING[pooling]()]
    features = keras.Input((backbone.output_shape[-1],), name="features")
    chain.append(keras.Model(features, head(features, params, n_classes), name="head"))
    model = keras.Sequential(chain, name=f"backbone_{spec.name}")
    freeze(model, float(params.get("freeze_fraction", 1.0)))
    return model
