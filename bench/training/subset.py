"""Data-fraction fidelity: the share of the training split that search trials train on.

`train_subset(dataset, fraction, seed=...)` keeps `fraction` of each class's training units, chosen by a seeded
permutation, where a unit is a group (a source smear, a near-duplicate set: `Dataset.splits`' group column) or, with
no groups, an image. Whole groups are kept or dropped, so the fraction is met as nearly as whole groups allow and
every class keeps at least one unit. The same fraction and seed give the same images, so every trial of a study (and
every worker process) trains on the same subset and trials compare like with like. Validation and test stay whole.

scikit-learn's `train_test_split(stratify=...)` does not keep groups whole and refuses a class with one member or a
held-out part smaller than the number of classes (a subset of 0.95 of a small set); per-class sampling has neither
limit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from bench.data import Dataset


def train_groups(dataset: Dataset) -> np.ndarray | None:
    """The group of each training image (in `x_train` order), or None when the dataset declares none."""
    splits = dataset.splits
    if "group" not in splits or "split" not in splits:
        return None
    groups = splits.loc[splits["split"] == "train", "group"].astype(str).to_numpy()
    if len(groups) != len(dataset.y_train) or not (groups != "").any():
        return None
    return np.where(groups != "", groups, "image:" + np.arange(len(groups)).astype(str))


def subset_rows(y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indexes of the kept images: per class (a group's class is its most common one, the lowest on a tie), a seeded
    `round(fraction * units)` of its units, at least one."""
    units = np.arange(len(y)).astype(str) if groups is None else groups
    counts = pd.DataFrame({"unit": units, "y": y}).value_counts().reset_index(name="n")
    by_unit = counts.sort_values(["unit", "n", "y"], ascending=[True, False, True]).drop_duplicates("unit") \
        .set_index("unit")["y"]
    rng = np.random.default_rng(seed)
    kept = []
    for label in sorted(by_unit.unique()):
        members = np.sort(by_unit.index[by_unit == label].to_numpy())
        kept.extend(rng.permutation(members)[:max(1, round(fraction * len(members)))])
    return np.flatnonzero(np.isin(units, kept))


def train_subset(dataset: Dataset, fraction: float, *, seed: int) -> Dataset:
    """`dataset` with its training split cut to `fraction` (see the module); itself when `fraction` is 1. The splits
    fingerprint names the cut, so content-keyed caches (the frozen-prefix features) tell the subset apart."""
    if fraction >= 1.0:
        return dataset
    keep = subset_rows(dataset.y_train, train_groups(dataset), fraction, seed)
    return dataclasses.replace(dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep],
                               splits_fingerprint=f"{dataset.splits_fingerprint}|subset {fraction:g} seed {seed}")


def subset_size(dataset: Dataset, fraction: float, *, seed: int) -> int:
    """How many training images each trial sees: what a study's budget counts as one epoch's images."""
    if fraction >= 1.0:
        return len(dataset.y_train)
    return len(subset_rows(dataset.y_train, train_groups(dataset), fraction, seed))


def subset_words(dataset: Dataset, fraction: float, *, seed: int) -> str:
    """What the study line says: `each trial trains on 30% of the training split (2,326 of 7,753 images, fixed for
    the study)`; "" for the whole split."""
    if fraction >= 1.0:
        return ""
    kept, total = subset_size(dataset, fraction, seed=seed), len(dataset.y_train)
    return f"each trial trains on {fraction:.0%} of the training split ({kept:,} of {total:,} images, fixed for the study)"
