"""Building blocks every family shares: training-only augmentation and the dense classification head."""

from __future__ import annotations

from typing import Any

from keras import layers

KerasTensor = Any  # keras.KerasTensor: a symbolic tensor of the functional API


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


def head(x: KerasTensor, params: dict[str, Any], n_classes: int) -> KerasTensor:
    """Dense head: `dense_layers` × Dense(`dense_units_i`)-ReLU-Dropout, then softmax."""
    for i in range(1, int(params.get("dense_layers", 0)) + 1):
        x = layers.Dense(int(params[f"dense_units_{i}"]), activation="relu", name=f"head_dense_{i}")(x)
        if params.get("dropout", 0) > 0:
            x = layers.Dropout(params["dropout"], name=f"head_dropout_{i}")(x)
    if int(params.get("dense_layers", 0)) == 0 and params.get("dropout", 0) > 0:
        x = layers.Dropout(params["dropout"], name="head_dropout")(x)
    return layers.Dense(n_classes, activation="softmax", name="probabilities", dtype="float32")(x)
