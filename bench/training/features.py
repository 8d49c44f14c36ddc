"""Frozen-prefix feature cache: compute a model's frozen, deterministic prefix once, train only the rest.

A trial whose model starts with layers that neither train nor act randomly (no augmentation, no dropout,
BatchNorm frozen) gets the same activations at the end of that prefix in every epoch, and in every trial
that shares backbone, weights, input size and freeze depth. `route(model, dataset)` cuts the model there,
computes the prefix's outputs for the train and validation splits once (kept in a bounded in-memory LRU,
keyed by the prefix's layers, configs and weight bytes plus the dataset's fingerprint), and returns the
trainable suffix to fit on them. The suffix shares its layers (and so its weights) with the full model,
which therefore stays the raw-pixels -> softmax model that is logged and served.

Only `keras.Sequential` chains are cut (the `backbone` family builds one); the cut may fall inside a nested
functional model (the backbone) at a point where exactly one tensor crosses it, so a residual block is
never split. Other models return `None` and train on pixels as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

from bench.data import Dataset
from bench.training.pipeline import batches  # one input pipeline (uint8 -> float32) for training and features

STOCHASTIC: tuple[type, ...] = (
    layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D,
    layers.GaussianNoise, layers.GaussianDropout, layers.AlphaDropout,
    *(getattr(layers, name) for name in dir(layers) if name.startswith("Random")),
)
"""Layers whose training-mode output is random: never inside a cached prefix."""


@dataclass
class Route:
    trainer: keras.Model  # the trainable suffix: cached features in, softmax out
    x_train: np.ndarray
    x_val: np.ndarray
    key: str
    hit: bool
    seconds: float  # spent computing features (0 on a hit)


def _sublayers(layer: layers.Layer) -> list[layers.Layer]:
    return [sub for sub in layer._flatten_layers(include_self=True, recursive=True)]


def frozen_and_deterministic(layer: layers.Layer) -> bool:
    """True when the layer (with everything nested in it) has no trainable weight, no training-mode
    randomness, and no BatchNormalization that would use batch statistics."""
    for sub in _sublayers(layer):
        if isinstance(sub, STOCHASTIC):
            return False
        if isinstance(sub, layers.BatchNormalization) and sub.trainable:
            return False
    return not layer.trainable_weights


def _producer(tensor: Any) -> layers.Layer:
    return tensor._keras_history.operation


def inner_cut(model: keras.Model) -> Any | None:
    """The tensor at the end of the longest frozen, deterministic run of `model`'s leading layers that
    exactly one tensor crosses (None when that run is empty)."""
    order = model.layers  # topological, InputLayer first
    position = {id(layer): i for i, layer in enumerate(order)}
    leading = 0
    while leading + 1 < len(order) and frozen_and_deterministic(order[leading + 1]):
        leading += 1
    # last_use[i]: the highest position reading any output of layer i (model outputs count as "after all").
    last_use = list(range(len(order)))
    own = model._nodes  # keys "<id(layer)>_ib-<index>": not the nodes of other models sharing a layer
    for i, layer in enumerate(order):
        for index, node in enumerate(layer._inbound_nodes):
            if f"{id(layer)}_ib-{index}" not in own:
                continue
            for tensor in node.input_tensors:
                j = position.get(id(_producer(tensor)))
                if j is not None:
                    last_use[j] = max(last_use[j], i)
    for tensor in model.outputs:
        last_use[position[id(_producer(tensor))]] = len(order)
    for cut in range(leading, 0, -1):
        crossing = [i for i in range(cut + 1) if last_use[i] > cut]
        if crossing == [cut] and len(order[cut]._inbound_nodes[0].output_tensors) == 1:
            return order[cut]._inbound_nodes[0].output_tensors[0]
    return None


def split(model: keras.Model) -> tuple[keras.Model, keras.Model] | None:
    """(frozen prefix, trainable suffix) sharing `model`'s layers, or None when nothing worth caching."""
    if not isinstance(model, keras.Sequential):
        return None
    chain = list(model.layers)
    whole = 0
    while whole < len(chain) and frozen_and_deterministic(chain[whole]):
        whole += 1
    prefix_layers, suffix_layers = chain[:whole], chain[whole:]
    if suffix_layers and isinstance(suffix_layers[0], keras.Model):
        nested = suffix_layers[0]
        cut = inner_cut(nested)
        if cut is not None:
            prefix_layers = [*prefix_layers, keras.Model(nested.input, cut, name=f"{nested.name}_frozen")]
            suffix_layers = [keras.Model(cut, nested.output, name=f"{nested.name}_trainable"), *suffix_layers[1:]]
    if not suffix_layers or not any(layer.weights for layer in prefix_layers):
        return None  # all frozen (nothing to train) or only weightless preprocessing: nothing to gain
    prefix = keras.Sequential([keras.Input(model.input_shape[1:], name="prefix_input"), *prefix_layers],
                              name="frozen_prefix")
    suffix = keras.Sequential([keras.Input(prefix.output_shape[1:], name="suffix_input"), *suffix_layers],
                              name="trainable_suffix")
    return prefix, suffix


Json = dict[str, "Json"] | list["Json"] | str | int | float | bool | None


def _strip_names(layer_config: Json) -> Json:
    if isinstance(layer_config, dict):
        return {k: _strip_names(v) for k, v in layer_config.items() if k != "name"}
    if isinstance(layer_config, list):
        return [_strip_names(v) for v in layer_config]
    return layer_config


def prefix_key(prefix: keras.Model, dataset: Dataset) -> str:
    """Content key: every layer's class, name (auto-generated names excluded), config and weight bytes,
    the input shape, and the dataset (its fingerprint, else the image bytes)."""
    digest = hashlib.sha256()
    digest.update(repr(prefix.input_shape).encode())
    for layer in _sublayers(prefix):
        if isinstance(layer, (layers.InputLayer, keras.Model)):
            continue  # auto-named containers; their layers are walked one by one
        config = _strip_names(layer.get_config())
        digest.update(f"{type(layer).__name__}|{layer.name}|{json.dumps(config, sort_keys=True, default=str)}".encode())
        for weight in layer.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    fingerprint = getattr(dataset, "fingerprint", "") or ""
    digest.update(fingerprint.encode())
    for array in (dataset.x_train, dataset.x_val):
        digest.update(repr(array.shape).encode())
        if not fingerprint:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:24]


class FeatureCache:
    """A least-recently-used map from prefix key to (train, val) features, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self._items.values())

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        if key not in self._items:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: str, value: tuple[np.ndarray, np.ndarray]) -> None:
        size = value[0].nbytes + value[1].nbytes
        if size > self.max_bytes:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while self.nbytes > self.max_bytes:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
        self.hits = self.misses = 0


CACHE = FeatureCache(int(float(os.environ.get("BENCH_FEATURE_CACHE_MB", "1024")) * 2**20))
"""The process-wide cache (`BENCH_FEATURE_CACHE_MB`, default 1024)."""


def compute(prefix: keras.Model, x: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    data = batches(x, np.zeros(len(x), np.int32), batch_size=batch_size, seed=0, shuffle=False)
    return np.asarray(prefix.predict(data, verbose=0), dtype=np.float32)


def route(model: keras.Model, dataset: Dataset, *, cache: FeatureCache | None = None) -> Route | None:
    """The cached-features route for `model` on `dataset`, or None when the model has no frozen prefix."""
    parts = split(model)
    if parts is None:
        return None
    prefix, suffix = parts
    cache = CACHE if cache is None else cache
    key = prefix_key(prefix, dataset)
    found = cache.get(key)
    hit = found is not None
    started = time.perf_counter()
    if found is None:
        found = (compute(prefix, dataset.x_train), compute(prefix, dataset.x_val))
        cache.put(key, found)
    return Route(suffix, found[0], found[1], key, hit=hit, seconds=time.perf_counter() - started)
