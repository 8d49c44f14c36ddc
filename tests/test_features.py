"""The frozen-prefix feature cache: where it cuts, that it is keyed by content, bounded, and that training on
cached features gives the same model as training on pixels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.training import features
from bench.models import list_backbones
from bench.data import load_dataset
from bench.training import FeatureCache, route, split
from bench.models import build_model
from bench.search import defaults, load_space
from bench.training import fit_and_score, predict_proba, start_trial


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("synthetic?n_per_class=8", image_size=32, seed=0)


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path, monkeypatch) -> None:  # the disk tier writes under it
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


def backbone_params(name: str = "mobilenet_v2", **overrides) -> dict:
    return {**defaults(load_space(name)), "input_size": 32, "batch_size": 16, **overrides}


def model_for(params: dict, family: str = "backbone"):
    start_trial(0)
    return build_model(family, params, image_size=32, n_classes=8, weights="none")


@pytest.mark.parametrize("name", list_backbones())
def test_prefix_then_suffix_computes_the_full_model_for_a_partly_frozen_backbone(name: str) -> None:
    model = model_for(backbone_params(name, freeze_fraction=0.6))
    prefix, suffix = split(model)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(suffix(prefix(x))), np.asarray(model(x)), atol=1e-6)
    # The suffix reuses the model's layers: training it trains the served model.
    assert {id(w) for w in suffix.trainable_weights} <= {id(w) for w in model.trainable_weights}
    assert not prefix.trainable_weights


def test_fully_frozen_prefix_runs_through_pooling_and_leaves_only_the_head() -> None:
    prefix, suffix = split(model_for(backbone_params(freeze_fraction=1.0)))
    assert prefix.output_shape == (None, 1280)  # pooled MobileNetV2 features
    assert [layer.name for layer in suffix.layers] == ["head"]


def test_no_cut_with_augmentation_before_the_backbone_or_for_a_scratch_cnn() -> None:
    assert split(model_for(backbone_params(augment=True, aug_flip=True, aug_rotation=0.1, aug_zoom=0.0,
                                           aug_contrast=0.0))) is None
    assert split(model_for(defaults(load_space("scratch_cnn")), family="scratch_cnn")) is None


@pytest.mark.parametrize("overrides", [{"freeze_fraction": 1.0},
                                       {"freeze_fraction": 0.85, "two_phase": True, "warmup_epochs": 1}],
                         ids=["fully-frozen", "two-phase"])
def test_cached_features_give_the_same_predictions_as_training_on_pixels(tiny, overrides) -> None:
    params = backbone_params(**overrides)
    probs = {}
    for cached in (False, True):
        start_trial(0)
        fit = fit_and_score(params, tiny, family="backbone", epochs=2, seed=0, feature_cache=cached)
        assert fit.model.input_shape == (None, 32, 32, 3) and fit.model.output_shape == (None, 8)
        probs[cached] = (fit.val_prob, predict_proba(fit.model, tiny.x_test))
    np.testing.assert_allclose(probs[True][0], probs[False][0], atol=1e-5)
    np.testing.assert_allclose(probs[True][1], probs[False][1], atol=1e-5)


def test_same_prefix_is_a_hit_and_a_different_depth_or_weights_is_a_miss(tiny) -> None:
    cache = FeatureCache(2**30)
    first = route(model_for(backbone_params(freeze_fraction=1.0)), tiny, cache=cache)
    again = route(model_for(backbone_params(freeze_fraction=1.0, dense_layers=0)), tiny, cache=cache)
    assert not first.hit and again.hit and again.key == first.key  # the head is not part of the key
    np.testing.assert_array_equal(again.x_train, first.x_train)
    deeper = route(model_for(backbone_params(freeze_fraction=0.85)), tiny, cache=cache)
    assert not deeper.hit and deeper.key != first.key
    start_trial(1)  # other random weights, same architecture
    other = route(build_model("backbone", backbone_params(freeze_fraction=1.0), image_size=32, n_classes=8), tiny,
                  cache=cache)
    assert not other.hit and other.key != first.key


def test_cache_evicts_least_recently_used_entries_beyond_its_byte_budget() -> None:
    item = (np.zeros(100, np.float32), np.zeros(28, np.float32))  # 512 bytes
    cache = FeatureCache(max_bytes=1100)
    cache.put("a", item)
    cache.put("b", item)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", item)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.nbytes <= 1100
    cache.put("huge", (np.zeros(1000, np.float32), np.zeros(1, np.float32)))
    assert cache.get("huge") is None


def test_the_process_cache_is_used_by_fit_and_score(tiny) -> None:
    features.CACHE.clear()
    params = backbone_params(freeze_fraction=1.0)
    for _ in range(2):
        start_trial(0)
        fit_and_score(params, tiny, family="backbone", epochs=1, seed=0)
    assert (features.CACHE.misses, features.CACHE.hits) == (1, 1)


# --- the disk tier ---

CACHE_SCRIPT = """
import json
import keras
from keras import layers
from bench.data import load_dataset
from bench.training import features

dataset = load_dataset("synthetic?n_per_class=8", image_size=32, seed=0)
model = keras.Sequential([
    keras.Input((32, 32, 3)),
    layers.Conv2D(8, 3, kernel_initializer=keras.initializers.GlorotUniform(seed=0), trainable=False),
    layers.GlobalAveragePooling2D(),
    layers.Dense(8, activation="softmax"),
])
found = features.route(model, dataset)
print(json.dumps({"source": found.source, "key": found.key, "disk_hits": features.DISK.hits,
                  "disk_misses": features.DISK.misses, "disk_writes": features.DISK.writes,
                  "train_sum": float(found.x_train.sum())}))
"""


def run_cache_script(cache_dir: Path) -> dict:
    """One fresh Python process that routes a small frozen-conv model through the feature cache."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache_dir), "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", CACHE_SCRIPT], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_later_process_reads_the_features_from_disk_instead_of_computing_them(tmp_path) -> None:
    first = run_cache_script(tmp_path / "cache")
    assert (first["source"], first["disk_misses"], first["disk_writes"]) == ("computed", 1, 1)
    second = run_cache_script(tmp_path / "cache")
    assert (second["source"], second["disk_hits"], second["disk_misses"]) == ("disk", 1, 0)
    assert (second["key"], second["train_sum"]) == (first["key"], first["train_sum"])
    assert [p.name for p in (tmp_path / "cache" / "features").glob("*.npz")] == [f"{first['key']}.npz"]


def test_workers_that_want_the_same_features_at_once_compute_them_once(tmp_path) -> None:
    computed, started = [], threading.Event()

    def slow(value: float):
        def compute():
            computed.append(value)
            started.set()
            time.sleep(0.5)  # the other worker arrives while this one computes (if it has not already)
            return _compute(value)()
        return compute

    results = {}

    def worker(name: str, value: float) -> None:  # each its own cache object, as in another process
        results[name] = features.DiskFeatureCache(2**20, folder=tmp_path).fetch("k", (10, 2), slow(value))

    first = threading.Thread(target=worker, args=("first", 1.0))
    first.start()
    started.wait(30)
    second = threading.Thread(target=worker, args=("second", 2.0))
    second.start()
    first.join(30), second.join(30)
    assert computed == [1.0] and results["second"][1] and results["second"][0][0][0, 0] == 1.0
    assert not list(tmp_path.glob("*.tmp"))


def _compute(value: float, rows: int = 10):
    return lambda: (np.full((rows, 25), value, np.float32), np.full((2, 25), value, np.float32))  # 1,200 bytes


def test_disk_tier_evicts_the_least_recently_used_files_beyond_its_byte_budget(tmp_path) -> None:
    disk = features.DiskFeatureCache(max_bytes=2**20, folder=tmp_path)
    for age, key in enumerate(["a", "b"]):
        disk.fetch(key, (10, 2), _compute(age))
        disk.max_bytes = int(2.5 * (tmp_path / "a.npz").stat().st_size)  # room for two files, not three
        os.utime(tmp_path / f"{key}.npz", (1e9 + age, 1e9 + age))  # b is newer than a
    (_, _), from_disk = disk.fetch("a", (10, 2), _compute(-1))  # reading a renews it
    assert from_disk
    disk.fetch("c", (10, 2), _compute(2))
    assert sorted(p.stem for p in tmp_path.glob("*.npz")) == ["a", "c"]
    assert (disk.hits, disk.misses, disk.writes) == (1, 3, 3)


def test_disk_tier_recomputes_a_damaged_or_mismatched_file(tmp_path) -> None:
    disk = features.DiskFeatureCache(max_bytes=2**20, folder=tmp_path)
    (tmp_path / "k.npz").write_bytes(b"PK\x03\x04 half a file")
    (train, _), from_disk = disk.fetch("k", (10, 2), _compute(1.0))
    assert not from_disk and train[0, 0] == 1.0
    (train, _), from_disk = disk.fetch("k", (11, 2), _compute(2.0, rows=11))  # other row counts: not these features
    assert not from_disk and train.shape == (11, 25)
    off = features.DiskFeatureCache(max_bytes=0, folder=tmp_path / "off")
    assert not off.fetch("k", (10, 2), _compute(1.0))[1] and not (tmp_path / "off").exists()


def test_the_key_covers_the_split_assignment(tiny) -> None:
    prefix, _ = split(model_for(backbone_params(freeze_fraction=1.0)))
    moved = replace(tiny, splits_fingerprint="another assignment")
    assert features.prefix_key(prefix, moved) != features.prefix_key(prefix, tiny)
