"""The embedded "synthetic" dataset: shapes, determinism, validation, and a learnable-but-not-trivial signal."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.errors import DataError
from bench.data.synthetic import CLASS_NAMES, generate


@pytest.fixture(scope="module")
def small_set() -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = generate(40, 32, seed=3, difficulty=0.5)
    return images, labels


def _split_score(features: np.ndarray, labels: np.ndarray, model) -> float:
    tr, va = train_test_split(np.arange(len(labels)), test_size=0.4, stratify=labels, random_state=0)
    model.fit(features[tr], labels[tr])
    return f1_score(labels[va], model.predict(features[va]), average="macro")


def test_shapes_dtypes_and_balance():
    images, labels, names = generate(3, 24, seed=1)
    assert images.shape == (24, 24, 24, 3) and images.dtype == np.uint8
    assert labels.shape == (24,) and labels.dtype == np.int64
    assert names == list(CLASS_NAMES) and len(names) == 8
    assert np.array_equal(labels, np.repeat(np.arange(8), 3))


def test_images_use_a_real_dynamic_range():
    images, _, _ = generate(2, 32, seed=0)
    per_image = images.reshape(len(images), -1)
    assert (per_image.max(axis=1) - per_image.min(axis=1) > 60).all()


def test_same_arguments_give_identical_bytes():
    a = generate(2, 32, seed=7, difficulty=0.3)[0]
    b = generate(2, 32, seed=7, difficulty=0.3)[0]
    assert a.tobytes() == b.tobytes()


def test_different_seed_gives_different_images():
    a = generate(2, 32, seed=7)[0]
    b = generate(2, 32, seed=8)[0]
    assert not np.array_equal(a, b)


def test_fewer_per_class_is_a_per_class_prefix():
    small, small_labels, _ = generate(2, 32, seed=5)
    big, big_labels, _ = generate(4, 32, seed=5)
    for k in range(len(CLASS_NAMES)):
        assert np.array_equal(small[k * 2:(k + 1) * 2], big[k * 4:k * 4 + 2])
    assert np.array_equal(small_labels, big_labels.reshape(8, 4)[:, :2].ravel())


def test_difficulty_changes_the_images():
    easy = generate(2, 32, seed=0, difficulty=0.0)[0].astype(int)
    hard = generate(2, 32, seed=0, difficulty=1.0)[0].astype(int)
    assert np.abs(easy - hard).mean() > 5


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_per_class": 0}, "The 'n_per_class' parameter must be an integer >= 1. Got 0 instead."),
        ({"n_per_class": 2.5}, "The 'n_per_class' parameter must be an integer >= 1. Got 2.5 instead."),
        ({"image_size": 8}, "The 'image_size' parameter must be an integer between 16 and 512. Got 8 instead."),
        ({"image_size": 1024}, "The 'image_size' parameter must be an integer between 16 and 512. Got 1024 instead."),
        ({"difficulty": 1.5}, "The 'difficulty' parameter must be a number between 0 and 1. Got 1.5 instead."),
        ({"difficulty": -0.1}, "The 'difficulty' parameter must be a number between 0 and 1. Got -0.1 instead."),
        ({"difficulty": float("nan")}, "The 'difficulty' parameter must be a number between 0 and 1. Got nan instead."),
        ({"seed": -1}, "The 'seed' parameter must be an integer >= 0. Got -1 instead."),
    ],
)
def test_bad_arguments_raise_one_line_data_errors(kwargs, fragment):
    with pytest.raises(DataError) as info:
        generate(**kwargs)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_colour_histograms_carry_learnable_signal(small_set):
    images, labels = small_set
    codes = (images // 64).astype(np.int64) @ np.array([16, 4, 1])
    hist = np.stack([np.bincount(c.ravel(), minlength=64) for c in codes]) / codes[0].size
    score = _split_score(hist, labels, make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)))
    assert score > 0.4  # chance is 0.125


def test_logistic_regression_on_raw_pixels_is_not_enough(small_set):
    images, labels = small_set
    n, size = len(images), images.shape[1]
    block = size // 8
    pixels = images.reshape(n, 8, block, 8, block, 3).mean(axis=(2, 4)).reshape(n, -1)
    score = _split_score(pixels, labels, make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)))
    assert score < 0.75  # a small CNN reaches > 0.9 at difficulty 0.5 (see bench/data/synthetic.py)
