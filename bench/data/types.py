"""Data types every layer above data shares: a loaded `Dataset`, and `Loaded` (a Dataset plus what
`data inspect` reports)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Dataset:
    name: str
    class_names: list[str]
    image_size: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str  # content + image size + resize mode + split rule and seed
    splits: pd.DataFrame  # file, class, group, split: one row per image used
    splits_fingerprint: str  # the actual assignment: hash of every image's file, content, class, group and split
    skipped: pd.DataFrame  # file, reason
    summary: str
    groups_test: np.ndarray | None = None
    resize_mode: str = "pad"  # how images were fitted to image_size; serving must do the same


@dataclass
class Loaded:
    """A Dataset plus what `inspect` reports: the per-image table and the source's notes."""

    dataset: Dataset
    table: pd.DataFrame  # file, class, group, official, sha1, width, height, split
    layout: str
    notes: list[str]
    rule: str
    from_cache: bool
