"""The input pipeline: uint8 images to float32 batches, the same for training, features and prediction; and the
trial hygiene every fit starts with."""

from __future__ import annotations

import gc

import keras
import numpy as np
import tensorflow as tf


_frozen = False


def start_trial(seed: int) -> None:
    """Trial hygiene in one place: a fresh Keras graph, collected garbage, one seed for everything.

    `clear_session` runs a full garbage collection. With TensorFlow, Keras and MLflow imported that is about
    half a million tracked objects and 0.7 s a collection on this machine, three times a trial (Keras, Optuna's
    `gc_after_trial`, and the next trial). The first trial therefore moves what is alive after its collection
    (modules, the study, the data) into the permanent generation (`gc.freeze`), and later collections scan only
    what trials create: 2 microseconds after the freeze, measured with the same imports."""
    global _frozen
    keras.backend.clear_session()
    if not _frozen:
        gc.freeze()
        _frozen = True
    keras.utils.set_random_seed(seed)


def predict_proba(model: keras.Model, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Probabilities for a uint8 image array, batch by batch (no progress bar, no `predict` overhead)."""
    out = [np.asarray(model(tf.cast(x[i : i + batch_size], tf.float32), training=False))
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def batches(x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int, shuffle: bool, rot90: bool = False,
            one_hot: int = 0, mixup: float = 0.0) -> tf.data.Dataset:
    """Batches of float32 images. `rot90` (training only) turns each image by a random multiple of 90 degrees:
    Keras has no such layer, and a custom one would not load in the served model. `one_hot` > 0 gives one-hot
    labels over that many classes (for a label-smoothed loss). `mixup` > 0 (training only; needs `one_hot`) blends
    each batch's images and labels with a shuffled copy of the batch, weights drawn from Beta(mixup, mixup)
    (`keras.layers.MixUp`, Zhang et al. 2018): it needs the labels, so it cannot be a layer of the model."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if rot90:
        # Each image's turn comes from a seeded stream zipped in order (new each epoch), not from a random op inside
        # the parallel map: there, which image drew which number depended on thread timing, so two runs with one
        # seed turned ~45 % of their images differently. Turned as float32: on uint8, oneDNN prints "supports
        # DT_UINT8 only on platforms with AVX-512" to stderr.
        turns = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, turns).map(
            lambda pair, r: (tf.image.rot90(tf.cast(pair[0], tf.float32), tf.cast(r % 4, tf.int32)), pair[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    if one_hot:
        ds = ds.map(lambda a, b: (a, tf.one_hot(b, one_hot)))
    ds = ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32), b))
    if mixup > 0:
        if not one_hot:
            raise ValueError("mixup blends labels: it needs one_hot labels")
        # Sequential map (no num_parallel_calls): the layer's seeded stream then gives each batch the same draw
        # on every run with one seed.
        blend = keras.layers.MixUp(alpha=mixup, seed=seed)
        ds = ds.map(lambda a, b: tuple(blend({"images": a, "labels": b}).values()))
    return ds.prefetch(tf.data.AUTOTUNE)
