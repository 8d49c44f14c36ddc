"""Pretrained backbones: a registry of builders, each with its preprocessing, and how their weights load.

Adding a backbone is one `@register_backbone` builder here plus one `search_spaces/<name>.yaml`; the
`backbone` family (bench.models.backbone) puts it in a chain with augmentation, pooling and the head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
from keras import layers

from bench.errors import ConfigError
from bench.registry import Registry
from bench.text import one_line

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


BACKBONES: Registry[BackboneSpec] = Registry("backbone", BackboneSpec)


def register_backbone(name: str, *, preprocess: Preprocess, imagenet: bool = True,
                      min_size: int = 32) -> Callable[[BackboneBuilder], BackboneBuilder]:
    return BACKBONES.decorator(name, preprocess=preprocess, imagenet=imagenet, min_size=min_size)


def list_backbones() -> list[str]:
    return BACKBONES.names()


def backbone_spec(name: str) -> BackboneSpec:
    return BACKBONES.get(name)


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
        raise ConfigError(f"weights file {path} does not fit backbone '{spec.name}': {one_line(exc, limit=300, typed=False)}") from None
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
