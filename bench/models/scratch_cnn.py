"""The `scratch_cnn` family: conv blocks (conv-BN-ReLU × convs_per_block, max-pool, dropout), then the head."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from bench.models.blocks import augmentation, head
from bench.models.family import register_family


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
