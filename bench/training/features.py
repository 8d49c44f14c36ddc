"""Frozen-prefix feature cache: compute a model's frozen, deterministic prefix once, train only the rest.

A trial whose model starts with layers that neither train nor act randomly (no augmentation, no dropout,
BatchNorm frozen) gets the same activations at the end of that prefix in every epoch, and in every trial
that shares backbone, weights, input size and freeze depth. `route(model, dataset)` cuts the model there,
computes the prefix's outputs for the train and validation splits once and returns the trainable suffix to
fit on them. The outputs are keyed by content: the prefix's layers, configs and weight bytes, its input shape,
and the dataset (fingerprint, actual split assignment, a sample of its pixels). They are kept in two tiers: a
bounded in-memory LRU (`BENCH_FEATURE_CACHE_MB`) and a bounded folder of `.npz` files under
`bench.paths.cache_dir()/features` (`BENCH_FEATURE_DISK_MB`, oldest-used evicted first), which later trials,
processes and studies read. A file is written under a per-key lock and renamed into place, so parallel workers
never read half a file, and a worker that finds another computing the same key waits for it instead. The suffix shares its layers (and so its weights) with the full model,
which therefore stays the raw-pixels -> softmax model that is logged and served.

Only `keras.Sequential` chains are cut (the `backbone` family builds one); the cut may fall inside a nested
functional model (the backbone) at a point where exactly one tensor crosses it, so a residual block is
never split. Other models return `None` and train on pixels as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from filelock import FileLock
from keras import layers

from bench import paths
from bench.data import Dataset
from bench.training.pipeline import batches  # one input pipeline (uint8 -> float32) for training and features

STOCHASTIC: tuple[type, ...] = (
    layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D,
    layers.GaussianNoise, layers.GaussianDropout, layers.AlphaDropout,
    *(getattr(layers, name) for name in dir(layers) if name.startswith("Random")),
)
"""Layers whose training-mode output is random: never inside a cached prefix."""
log = logging.getLogger("bench.training.features")


@dataclass
class Route:
    trainer: keras.Model  # the trainable suffix: cached features in, softmax out
    x_train: np.ndarray
    x_val: np.ndarray
    key: str
    hit: bool
    seconds: float  # spent computing or reading the features
    source: str = "computed"  # "memory", "disk" or "computed"


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


KEY_VERSION = "features-2"
"""Part of every key: change it when the input pipeline or what the key covers changes."""
PIXEL_SAMPLE = 64
"""Images per split, evenly spaced, whose pixels enter the key beside the dataset's fingerprints."""


def prefix_key(prefix: keras.Model, dataset: Dataset) -> str:
    """Content key: every layer's class, name (auto-generated names excluded), config and weight bytes, the input
    shape, the Keras version, and the dataset: its fingerprint (files, size, resize mode, split rule, seed), its
    actual split assignment, and the pixels of a sample of images (all of them when there is no fingerprint)."""
    digest = hashlib.sha256(f"{KEY_VERSION}|keras {keras.__version__} {keras.config.backend()}".encode())
    digest.update(repr(prefix.input_shape).encode())
    for layer in _sublayers(prefix):
        if isinstance(layer, (layers.InputLayer, keras.Model)):
            continue  # auto-named containers; their layers are walked one by one
        config = _strip_names(layer.get_config())
        digest.update(f"{type(layer).__name__}|{layer.name}|{json.dumps(config, sort_keys=True, default=str)}".encode())
        for weight in layer.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    fingerprint = getattr(dataset, "fingerprint", "") or ""
    digest.update(f"|{fingerprint}|{getattr(dataset, 'splits_fingerprint', '') or ''}".encode())
    for array in (dataset.x_train, dataset.x_val):
        digest.update(repr(array.shape).encode())
        sample = fingerprint and len(array) > PIXEL_SAMPLE
        rows = np.linspace(0, len(array) - 1, PIXEL_SAMPLE).astype(int) if sample else slice(None)
        digest.update(np.ascontiguousarray(array[rows]).tobytes())
    return digest.hexdigest()[:32]


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


Features = tuple[np.ndarray, np.ndarray]
STALE_TMP_SECONDS = 3600  # a temporary file this old belongs to a process that died while writing


class DiskFeatureCache:
    """Feature files `<key>.npz` in `folder` (default `bench.paths.cache_dir()/features`, read when used), bounded
    in bytes: the least recently used (by mtime, which every read renews) are deleted first. `max_bytes=0` turns it
    off. Counters: `hits` (read from disk), `misses` (computed here), `writes`."""

    def __init__(self, max_bytes: int, folder: Path | None = None) -> None:
        self.max_bytes, self._folder = max_bytes, folder
        self.hits = self.misses = self.writes = 0

    @property
    def folder(self) -> Path:
        return self._folder if self._folder is not None else paths.cache_dir() / "features"

    def fetch(self, key: str, rows: tuple[int, int], compute_all: Callable[[], Features]) -> tuple[Features, bool]:
        """(features, read from disk?): the file under `key` when it holds `rows` (train, val) rows, else
        `compute_all()`, written for the next reader. Computed once per key: a second process waits on the
        key's lock while the first computes, then reads its file."""
        if self.max_bytes <= 0:
            self.misses += 1
            return compute_all(), False
        found = self._read(key, rows)
        if found is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.folder / f"{key}.lock")):
                found = self._read(key, rows)
                if found is None:
                    self.misses += 1
                    value = compute_all()
                    self._write(key, value)
                    return value, False
        self.hits += 1
        return found, True

    def _read(self, key: str, rows: tuple[int, int]) -> Features | None:
        path = self.folder / f"{key}.npz"
        try:
            with np.load(path) as data:
                value = (data["train"], data["val"])
            os.utime(path)  # most recently used
        except FileNotFoundError:
            return None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("feature cache: unreadable %s (%s); computing again", path, exc)
            return None
        return value if (len(value[0]), len(value[1])) == rows else None

    def _write(self, key: str, value: Features) -> None:
        if value[0].nbytes + value[1].nbytes > self.max_bytes:
            return
        path = self.folder / f"{key}.npz"
        try:
            paths.write_atomically(path, lambda handle: np.savez(handle, train=value[0], val=value[1]))
            self.writes += 1
        except OSError as exc:  # a full disk costs the next trial a recomputation, nothing more
            log.warning("feature cache: cannot write %s (%s)", path, exc)
        self.evict(keep=key)

    def evict(self, *, keep: str = "") -> None:
        """Delete the least recently used files until the rest fit in `max_bytes` (never `keep`), and temporary
        files left by processes that died while writing."""
        entries, now = [], time.time()
        for path in self.folder.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # another process evicted it
            if path.suffix == ".tmp" and now - stat.st_mtime > STALE_TMP_SECONDS:
                path.unlink(missing_ok=True)
            elif path.suffix == ".npz":
                entries.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path.stem != keep:
                path.unlink(missing_ok=True)
                path.with_suffix(".lock").unlink(missing_ok=True)
                total -= size


def _megabytes(variable: str, default: str) -> int:
    return int(float(os.environ.get(variable, default)) * 2**20)


CACHE = FeatureCache(_megabytes("BENCH_FEATURE_CACHE_MB", "1024"))
"""The process-wide memory tier (`BENCH_FEATURE_CACHE_MB`, default 1024)."""
DISK = DiskFeatureCache(_megabytes("BENCH_FEATURE_DISK_MB", "4096"))
"""The disk tier shared by processes (`BENCH_FEATURE_DISK_MB`, default 4096; 0 turns it off)."""


def compute(prefix: keras.Model, x: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    data = batches(x, np.zeros(len(x), np.int32), batch_size=batch_size, seed=0, shuffle=False)
    return np.asarray(prefix.predict(data, verbose=0), dtype=np.float32)


def route(model: keras.Model, dataset: Dataset, *, cache: FeatureCache | None = None,
          disk: DiskFeatureCache | None = None) -> Route | None:
    """The cached-features route for `model` on `dataset`, or None when the model has no frozen prefix.
    Looks in memory, then on disk, and computes the features only when neither holds them."""
    parts = split(model)
    if parts is None:
        return None
    prefix, suffix = parts
    cache = CACHE if cache is None else cache
    disk = DISK if disk is None else disk
    key = prefix_key(prefix, dataset)
    started = time.perf_counter()
    found, source = cache.get(key), "memory"
    if found is None:
        found, from_disk = disk.fetch(key, (len(dataset.x_train), len(dataset.x_val)),
                                      lambda: (compute(prefix, dataset.x_train), compute(prefix, dataset.x_val)))
        source = "disk" if from_disk else "computed"
        cache.put(key, found)
    seconds = time.perf_counter() - started
    log.info("features %s: %s in %.2f s (%s)", key, source, seconds, "x".join(map(str, found[0].shape[1:])))
    return Route(suffix, found[0], found[1], key, hit=source != "computed", seconds=seconds, source=source)
