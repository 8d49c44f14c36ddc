"""Building blocks every family shares: training-only augmentation and the dense classification head.

Augmentation for stained smears (a cell has no orientation; stains vary between slides and labs), all built-in
Keras layers so that a saved model loads without project code, each a no-op at inference:

- `aug_flip`: horizontal and vertical flips. The other half of the 90-degree rotations (`aug_rot90`) is done in
  the input pipeline (`bench.training.pipeline`): Keras has no random rot90 layer, and a custom layer would not
  load in the served model (which carries only bench.errors, bench.images and bench.serving.pyfunc);
- `aug_translate`: random translation by up to that fraction of the image, reflected at the border;
- `aug_stain`: stain jitter of strength s: brightness +-s/2 of the range, saturation x(0.5-s)/(0.5+s) ..
  x(0.5+s)/(0.5-s), hue shifted by up to +-s/6 of the colour circle;
- `aug_rotation`, `aug_zoom` (arbitrary angles and scales: expensive on CPU, see benchmarks/augmentation_cost.py)
  and `aug_contrast`.

`aug_mixup` (blending pairs of images and their labels) needs the labels, so it too is in the input pipeline.
"""

from __future__ import annotations

from typing import Any

from keras import layers

KerasTensor = Any  # keras.KerasTensor: a symbolic tensor of the functional API


def augmentation(params: dict[str, Any], *, seed: int) -> list[layers.Layer]:
    """Training-only augmentation from the `aug_*` parameters (a no-op at inference)."""
    out: list[layers.Layer] = []
    if params.get("aug_flip", False):
        out.append(layers.RandomFlip("horizontal_and_vertical", seed=seed))
    if params.get("aug_translate", 0) > 0:
        shift = float(params["aug_translate"])
        out.append(layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=seed))
    if params.get("aug_rotation", 0) > 0:
        out.append(layers.RandomRotation(params["aug_rotation"], fill_mode="reflect", seed=seed))
    if params.get("aug_zoom", 0) > 0:
        out.append(layers.RandomZoom(params["aug_zoom"], fill_mode="reflect", seed=seed))
    if params.get("aug_contrast", 0) > 0:
        out.append(layers.RandomContrast(params["aug_contrast"], value_range=(0, 255), seed=seed))
    if params.get("aug_stain", 0) > 0:
        out += stain_jitter(float(params["aug_stain"]), seed=seed)
    return out


def stain_jitter(strength: float, *, seed: int) -> list[layers.Layer]:
    """Brightness, saturation and hue jitter of one strength in (0, 0.5) (see the module docstring)."""
    s = min(max(strength, 0.0), 0.49)
    return [layers.RandomBrightness(s / 2, value_range=(0, 255), seed=seed),
            layers.RandomSaturation((0.5 - s, 0.5 + s), value_range=(0, 255), seed=seed),
            layers.RandomHue((0.0, s / 3), value_range=(0, 255), seed=seed)]


def head(x: KerasTensor, params: dict[str, Any], n_classes: int) -> KerasTensor:
    """Dense head: `dense_layers` × Dense(`dense_units_i`)-ReLU-Dropout, then softmax."""
    for i in range(1, int(params.get("dense_layers", 0)) + 1):
        x = layers.Dense(int(params[f"dense_units_{i}"]), activation="relu", name=f"head_dense_{i}")(x)
        if params.get("dropout", 0) > 0:
            x = layers.Dropout(params["dropout"], name=f"head_dropout_{i}")(x)
    if int(params.get("dense_layers", 0)) == 0 and params.get("dropout", 0) > 0:
        x = layers.Dropout(params["dropout"], name="head_dropout")(x)
    return layers.Dense(n_classes, activation="softmax", name="probabilities", dtype="float32")(x)
