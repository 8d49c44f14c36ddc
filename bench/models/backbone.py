"""The `backbone` model family: a `keras.Sequential` chain, raw 0..255 pixels in, softmax out::

    image (dataset size) -> [augmentation] -> [Resizing to input_size] -> preprocessing -> backbone -> pooling -> head

A chain lets `bench.training.features` cut it at the end of the frozen prefix and cache that prefix's outputs.

Freeze depth: `freeze_fraction` of the backbone's layers (InputLayer excluded, in topological order, so from
the input side) get `trainable=False`. Every BatchNormalization layer of the backbone stays non-trainable, above
the cut too: Keras 3 runs a non-trainable BatchNormalization in inference mode (ImageNet's moving statistics,
never updated), as Keras's transfer-learning guide advises for fine-tuning. Measured on the Kaggle card
(MobileNetV2, 96 px input, freeze 0.85, the same parameters and seed): with the unfrozen BatchNorm layers training,
validation macro-F1 was 0.153 after epoch 1 and 0.649 after 10 (their moving averages, momentum 0.999, trail the
batch statistics the convolutions learn from for hundreds of steps); kept in inference mode, 0.638 after epoch 1,
0.689 after epoch 2 (its best), 0.682 after 10 (trial 3 of the README's patient-pruner study, retrained through
`bench.training.fit_and_score`, 2026-12-02).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from bench.errors import ConfigError
from bench.models.backbones import backbone_spec, create_backbone, list_backbones
from bench.models.blocks import augmentation, head
from bench.models.family import Phase, register_family


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
        layer.trainable = i >= frozen and not isinstance(layer, layers.BatchNormalization)
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
